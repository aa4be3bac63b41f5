"""``celltrain serve MODEL[:alias|:version]``, ``celltrain deployments`` and
``celltrain stop-deployment NAME``: the CLI's part for serving (cli.py adds them)."""
from __future__ import annotations

import time


def model_ref(ws, ref: str):
    """"name", "name:3" (a version) or "name:production" (an alias) as a ModelVersion."""
    name, _, which = ref.partition(":")
    if not which:
        return ws.model(name)
    if which.isdigit():
        return ws.model(name, version=int(which))
    return ws.model(name, alias=which)


def cmd_serve(ws, args) -> int:
    version = model_ref(ws, args.model)
    name = args.name or version.name.lower().replace("_", "-").replace(".", "-")
    svc = version.deploy(name, port=args.port, auth=args.auth, target=args.target,
                         host=args.host, entry_script=args.entry_script,
                         source_dir=args.source_dir, timeout=args.timeout)
    print(f"{svc.name}: {svc.state} at {svc.url} serving {svc.model} (run {svc.run_id})")
    print(f"  infer: POST {svc.infer_uri}")
    if args.entry_script:
        print(f"  score: POST {svc.scoring_uri}")
    if svc.token:
        print(f"  token: {svc.token}  (header 'Authorization: Bearer <token>')")
    print(f"  stop:  celltrain stop-deployment {svc.name}")
    return 0


def _age(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_deployments(ws, args) -> int:
    from ..views.tables import format_table
    found = ws.deployments(all_versions=args.all)
    if not found:
        print(f"no deployments in {ws.path} (celltrain serve MODEL makes one)")
        return 0
    rows = []
    for d in found:
        s = d.summary()
        rows.append([s["name"], s["state"], s["url"], s["model"], _age(s["started"]),
                     int(s["requests"]), int(s["errors"]), f"{s['latency_p50_ms']:.2f}",
                     f"{s['latency_p95_ms']:.2f}"])
    print(format_table(rows, ["NAME", "STATE", "URL", "MODEL", "STARTED", "REQUESTS", "ERRORS",
                              "P50 MS", "P95 MS"]))
    return 0


def cmd_stop(ws, args) -> int:
    svc = ws.deployment(args.name)
    state = svc.stop()
    print(f"{svc.name}: {state}")
    return 0


def add_commands(sub) -> None:
    serve = sub.add_parser("serve", help="serve a registered model version over the Open "
                                         "Inference Protocol v2")
    serve.add_argument("model", help="NAME, NAME:VERSION or NAME:ALIAS")
    serve.add_argument("--name", help="the deployment's name (default: the model's)")
    serve.add_argument("--port", type=int, help="host port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--auth", action="store_true", help="require a bearer token")
    serve.add_argument("--target", default="docker")
    serve.add_argument("--entry-script", help="an Azure-style score.py (init/run)")
    serve.add_argument("--source-dir", help="the folder holding the entry script")
    serve.add_argument("--timeout", type=float, default=900.0)
    serve.set_defaults(func=cmd_serve)
    deps = sub.add_parser("deployments", help="deployments: state, URL, requests, latency")
    deps.add_argument("--all", action="store_true", help="every deployment, not the newest "
                                                         "of each name")
    deps.set_defaults(func=cmd_deployments)
    stop = sub.add_parser("stop-deployment", help="stop a deployment, removing its container")
    stop.add_argument("name")
    stop.set_defaults(func=cmd_stop)
