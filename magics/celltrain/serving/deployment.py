"""``Deployment``: the handle of one deployment run, read fresh from the store each time.

Its state is the run's, in serving words: Transitioning (preparing, starting, loading the
model), Healthy (the server logged serve/ready: /v2/health/ready answers), Failed (with the
run's reason), Stopped.  ``predict`` speaks the Open Inference Protocol v2 over plain HTTP.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from .. import states
from ..errors import CelltrainError
from ..spec import RunSpec

if TYPE_CHECKING:
    from ..workspace import Workspace

EXPERIMENT = "deployments"
BINARY_HEADER = "Inference-Header-Content-Length"   # the binary tensor data extension
HEALTHY, TRANSITIONING, FAILED, STOPPED = "Healthy", "Transitioning", "Failed", "Stopped"
DATATYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8",
             "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
             "bool": "BOOL"}


class DeploymentError(CelltrainError):
    """A deployment could not be made, failed, or refused a request (the message says why)."""


class Deployment:
    """One deployment: ``url``, ``state``, ``predict(x)``, ``score(data)``, ``logs()``,
    ``stop()``; ``stats`` has its request count, errors and latency p50/p95."""

    def __init__(self, workspace: "Workspace", run_id: str):
        self.workspace, self.run_id = workspace, run_id
        self._metadata = None

    @property
    def record(self) -> dict:
        return self.workspace.store.get_run(self.run_id)

    @property
    def run(self):
        return self.workspace.run(self.run_id)

    @property
    def name(self) -> str:
        return self.record["tags"]["deployment"]

    @property
    def model(self) -> str:
        """"name:version" of the served model version."""
        return self.record["tags"]["model"]

    @property
    def url(self) -> str:
        return self.record["tags"]["url"]

    @property
    def scoring_uri(self) -> str:
        """Azure's name: the /score endpoint (entry script deployments)."""
        return self.url + "/score"

    @property
    def infer_uri(self) -> str:
        return f"{self.url}/v2/models/{self.model.rsplit(':', 1)[0]}/infer"

    @property
    def token(self) -> str | None:
        """The bearer token every request must carry (auth=True), else None."""
        from .deploy import TOKEN_ENV
        return RunSpec.from_record(self.record).env_vars.get(TOKEN_ENV)

    @property
    def state(self) -> str:
        record = self.record
        status = record["status"]
        if status == states.FAILED:
            return FAILED
        if states.is_terminal(status):
            return STOPPED
        if status == states.RUNNING and "serve/ready" in self.stats_raw():
            return HEALTHY
        return TRANSITIONING

    @property
    def reason(self) -> str | None:
        return self.record["reason"]

    def stats_raw(self) -> dict[str, float]:
        return {k: v for k, v in self.workspace.store.latest_metrics(self.run_id).items()
                if k.startswith("serve/")}

    @property
    def stats(self) -> dict[str, float]:
        """{"requests", "errors", "latency_p50_ms", "latency_p95_ms"} as last reported."""
        raw = self.stats_raw()
        return {k: raw.get(f"serve/{k}", 0) for k in ("requests", "errors", "latency_p50_ms",
                                                      "latency_p95_ms")}

    def summary(self) -> dict[str, Any]:
        """What ``ws.deployments()`` and the CLI show of it."""
        record = self.record
        return {"name": self.name, "state": self.state, "url": self.url, "model": self.model,
                "started": record["started"], "run": self.run_id, **self.stats,
                "reason": record["reason"]}

    def __repr__(self) -> str:
        return f"<Deployment {self.name} {self.state} {self.url} model={self.model}>"

    # -- waiting, logs, stopping ------------------------------------------------------------------
    def wait(self, timeout: float = 900.0) -> str:
        """Wait until Healthy; raises DeploymentError with the reason if it fails."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state
            if state == HEALTHY:
                return state
            if state in (FAILED, STOPPED):
                raise DeploymentError(f"deployment {self.name!r} {state.lower()}: "
                                      f"{self.reason or 'no reason recorded'}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"deployment {self.name!r} is not Healthy after "
                                      f"{timeout:g}s (run {self.run_id} is "
                                      f"{self.record['status']}): see .logs()")
            time.sleep(0.1)

    def logs(self) -> str:
        """The server's output (and the supervisor's notes: image build, start)."""
        return self.run.logs()

    def stop(self, grace: float = 5.0) -> str:
        """Stop the server and remove its container (or process); the state becomes Stopped."""
        self.run.cancel(grace=grace, wait=True)
        return self.state

    # -- requests --------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0):
        """(status, parsed JSON) of one request to the endpoint, with the token if it has one."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"error": text.decode(errors="replace")}

    def metadata(self) -> dict:
        """The model's Open Inference Protocol metadata (inputs, outputs, datatypes, shapes)."""
        if self._metadata is None:
            name = self.model.rsplit(":", 1)[0]
            code, body = self.request("GET", f"/v2/models/{name}")
            if code != 200:
                raise DeploymentError(f"{self.url} answered {code} for the metadata: "
                                      f"{body.get('error') if isinstance(body, dict) else body}")
            self._metadata = body
        return self._metadata

    def predict(self, *inputs):
        """Arrays (or tensors) in, one per model input; the output array out (a dict of them
        by name when the model has several)."""
        import numpy as np
        meta = self.metadata()
        if len(inputs) != len(meta["inputs"]):
            raise ValueError(f"{meta['name']} takes {len(meta['inputs'])} input(s) "
                             f"({', '.join(i['name'] for i in meta['inputs'])}), not "
                             f"{len(inputs)}")
        tensors, blobs = [], []
        for spec, x in zip(meta["inputs"], inputs):
            x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            if DATATYPES.get(x.dtype.name) != spec["datatype"] and x.dtype.kind in "fiub":
                x = x.astype({v: k for k, v in DATATYPES.items()}.get(spec["datatype"],
                                                                     x.dtype))
            blob = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()
            tensors.append({"name": spec["name"], "shape": list(x.shape),
                            "datatype": DATATYPES.get(x.dtype.name, "BYTES"),
                            "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        head = json.dumps({"inputs": tensors,
                           "parameters": {"binary_data_output": True}}).encode()
        code, body, rest = self._post_binary(f"/v2/models/{meta['name']}/infer", head,
                                             b"".join(blobs))
        if code != 200:
            raise DeploymentError(f"{self.name} answered {code}: {body.get('error')}")
        outs, at = {}, 0
        for o in body["outputs"]:
            dtype = np.dtype(_numpy_type(o["datatype"])).newbyteorder("<")
            if "parameters" in o and "binary_data_size" in o["parameters"]:
                size = o["parameters"]["binary_data_size"]
                array = np.frombuffer(rest[at:at + size], dtype=dtype)
                at += size
            else:
                array = np.asarray(o["data"], dtype=dtype)
            outs[o["name"]] = array.reshape(o["shape"]).astype(dtype.newbyteorder("="))
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def _post_binary(self, path: str, head: bytes, blob: bytes):
        """POST with the binary data extension: (status, JSON part, the bytes after it)."""
        headers = {"Content-Type": "application/octet-stream",
                   BINARY_HEADER: str(len(head))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=head + blob, headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                code, data, split = resp.status, resp.read(), resp.headers.get(BINARY_HEADER)
        except urllib.error.HTTPError as e:
            code, data, split = e.code, e.read(), None
        n = int(split) if split else len(data)
        try:
            return code, json.loads(data[:n]), data[n:]
        except ValueError:
            return code, {"error": data.decode(errors="replace")}, b""

    def score(self, data: Any):
        """POST ``data`` (JSON-encoded) to the entry script's /score; its run()'s answer."""
        code, body = self.request("POST", "/score", data)
        if code != 200:
            raise DeploymentError(f"{self.name} answered {code}: "
                                  f"{body.get('error') if isinstance(body, dict) else body}")
        return body


def _numpy_type(datatype: str) -> str:
    return {v: k for k, v in DATATYPES.items()}.get(datatype, "float32")


def _deployment_rows(ws: "Workspace") -> list[dict]:
    return [r for r in ws.store.list_runs(experiment=EXPERIMENT)
            if r.get("kind") == "deployment" and "deployment" in (r.get("tags") or {})]


def list_deployments(ws: "Workspace", all_versions: bool = False) -> list[Deployment]:
    """The newest deployment of each name (every one with ``all_versions``), newest first."""
    seen, out = set(), []
    for row in _deployment_rows(ws):
        name = row["tags"]["deployment"]
        if name in seen and not all_versions:
            continue
        seen.add(name)
        out.append(Deployment(ws, row["id"]))
    return out


def get_deployment(ws: "Workspace", name: str) -> Deployment:
    for row in _deployment_rows(ws):
        if row["tags"]["deployment"] == name:
            return Deployment(ws, row["id"])
    names = sorted({r["tags"]["deployment"] for r in _deployment_rows(ws)})
    raise DeploymentError(f"no deployment {name!r} in {ws.path}; there are: "
                          f"{', '.join(names) or 'none'} (ModelVersion.deploy makes one)")


def active_deployment(ws: "Workspace", name: str) -> Deployment | None:
    for row in _deployment_rows(ws):
        if row["tags"]["deployment"] == name and not states.is_terminal(row["status"]):
            return Deployment(ws, row["id"])
    return None
