# A training script written for Azure ML SDK v1, unchanged: it knows nothing of celltrain.
import argparse
import math
import os
import time

from azureml.core.run import Run

parser = argparse.ArgumentParser()
parser.add_argument("--learning_rate", type=float, default=0.01)
parser.add_argument("--num_epochs", type=int, default=4)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--epoch_seconds", type=float, default=0)
args = parser.parse_args()

run = Run.get_context()
if args.fail:
    raise SystemExit("asked to fail")
peak = 1 - (math.log10(args.learning_rate) + 2) ** 2 / 4
acc = 0.0
for epoch in range(args.num_epochs):
    acc = peak * (1 - math.exp(-(epoch + 1) / 2))
    run.log("val_acc", acc, description="validation accuracy", step=epoch)
    time.sleep(args.epoch_seconds)
run.log("best_val_acc", acc)
run.log_list("losses", [0.9, 0.5, 0.3])
run.log_row("per_class", bird="wren", acc=0.75)
run.tag("framework", "pytorch")
run.tag("parent", run.parent.id if run.parent is not None else "none")   # HyperDrive's run
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
with open("curve.png", "wb") as f:
    f.write(PNG)
run.log_image("curve", path="curve.png")
print("offline" if run.id == "OfflineRun" else "online", os.environ.get("RANK", "0"))
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.pt", "w") as f:
    f.write("weights %f" % acc)
