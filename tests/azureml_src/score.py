# An Azure-style entry script, unchanged.
import json
import os

from azureml.core.model import Model


def init():
    global weights
    path = Model.get_model_path("birds")
    with open(path) as f:
        weights = f.read()


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"sum": sum(data), "weights": weights, "dir": bool(os.environ["AZUREML_MODEL_DIR"])}
