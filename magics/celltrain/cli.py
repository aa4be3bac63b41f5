"""The ``celltrain`` command: a view of the workspace store, like the widgets and the sidebar.

    celltrain runs|list [--experiment E] [--status S] [--limit N] [--search Q] [--columns A,B]
    celltrain show RUN|SWEEP
    celltrain sweeps
    celltrain logs RUN [-f]
    celltrain cancel RUN [--grace S]
    celltrain models
    celltrain targets [add NAME KIND [KEY=VALUE ...] | remove NAME]
    celltrain base-image [--suite bookworm]
    celltrain serve MODEL[:alias|:version] [--port N] [--auth] [--target local]
    celltrain deployments [--all]
    celltrain stop-deployment NAME
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import states
from .errors import CelltrainError


def _age(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(record: dict) -> str:
    start = record.get("started")
    if not start:
        return "-"
    seconds = (record.get("ended") or time.time()) - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def cmd_runs(ws, args) -> int:
    """The runs, newest first: each with its chosen metric columns (``--columns``, else the
    workspace's choice, the sidebar's) or its first three metrics; ``--search`` as the
    sidebar's search box ("lr=0.01 birds")."""
    from .store.settings import check_columns
    from .views.tables import format_table
    columns = check_columns(args.columns) if getattr(args, "columns", None) else \
        ws.store.run_columns()
    records = ws.store.list_runs(experiment=args.experiment,
                                 status=[args.status] if args.status else None, limit=args.limit,
                                 search=getattr(args, "search", None))
    if not records:
        search = getattr(args, "search", None)
        print(f"no runs in {ws.path}" + (f" match {search!r}" if search else ""))
        return 0
    rows = []
    for r in records:
        metrics = ws.store.latest_metrics(r["id"])
        if columns:
            shown = [_value(metrics.get(c)) for c in columns]
        else:
            shown = [", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3]
                               if v is not None)]
        rows.append([r["id"], r["experiment"], r["number"], r["status"], _age(r["created"]),
                     _duration(r), *shown])
    print(format_table(rows, ["RUN", "EXPERIMENT", "#", "STATUS", "CREATED", "DURATION",
                              *(columns or ["METRICS"])]))
    return 0


def _value(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_show(ws, args) -> int:
    run = ws.run(args.run)
    r = run.record
    if r.get("kind") == "sweep":
        from .views.sweep_text import format_sweep
        print(format_sweep(ws.sweep(run.id)))
        return 0
    print(f"run         {r['id']}  ({r['experiment']} #{r['number']}, target {r['target']})")
    print(f"status      {r['status']}" + (f"  exit code {r['exit_code']}"
                                          if r["exit_code"] is not None else ""))
    if r["reason"]:
        print("reason      " + r["reason"].replace("\n", "\n            "))
    for i, warning in enumerate(run.warnings):
        print(("warnings    " if i == 0 else "            ") + warning)
    if r.get("parent_id"):
        trial = r["tags"].get("celltrain.trial")
        print(f"sweep       {r['parent_id']}" + (f" (trial {trial})" if trial else ""))
    code = run.code
    if code["kind"] == "script":
        print(f"command     {code['command']}")
    else:
        where = " ".join(filter(None, (code["notebook"], code["cell"])))
        print(f"notebook    {where or '- (not started from a Jupyter notebook)'}")
    print(f"image       {r['image'] or '-'}  {r['image_digest'] or ''}")
    if r.get("handle"):
        print("started     " + ("warm (forked from the environment's worker)"
                                if run.started_warm else "cold"))
    print(f"params      {json.dumps(r['params'])}")
    if r["tags"]:
        print(f"tags        {json.dumps(r['tags'])}")
    print("history")
    for h in run.history():
        print(f"  {_age(h['time'])}  {h['status']:<10} {h['detail'] or ''}")
    metrics = run.latest_metrics()
    if metrics:
        print("metrics (last value)")
        for name, value in metrics.items():
            print(f"  {name:<20} {value}")
    system = ws.store.latest_system(run.id)
    if system:
        from .views.system_view import format_system
        print("system (last sample)")
        for name, value in system.items():
            print(f"  {name:<20} {format_system(name, value)}")
    if code["source"]:
        print("code")
        print("  " + code["source"].rstrip().replace("\n", "\n  "))
    files = run.files()
    if files:
        print("files")
        for f in files:
            print(f"  {f}")
    return 0


def cmd_sweeps(ws, args) -> int:
    from .views.sweep_text import format_sweeps
    print(format_sweeps(ws))
    return 0


def cmd_logs(ws, args) -> int:
    run = ws.run(args.run)
    if args.follow:
        run.wait(show_output=True)
    else:
        sys.stdout.write(run.logs())
    return 0


def cmd_cancel(ws, args) -> int:
    run = ws.run(args.run)
    status = run.cancel(grace=args.grace)
    print(f"run {run.id}: {status}")
    return 0 if status in states.TERMINAL else 1


def cmd_models(ws, args) -> int:
    from .views.model_cards import format_models
    print(format_models(ws))
    return 0


def cmd_base_image(ws, args) -> int:
    from .targets.docker import engine
    from .targets.docker.baseimage import build_offline_base
    build_offline_base(engine.client(timeout=1800), suite=args.suite,
                       log=lambda m: print(m, flush=True))
    return 0


def cmd_targets(ws, args) -> int:
    """The kinds of compute target, and the targets saved in the workspace."""
    if args.action == "add":
        settings = {}
        for item in args.settings:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"a target setting takes KEY=VALUE, not {item!r}")
            settings[key] = value
        saved = ws.add_target(args.name, args.kind, **settings)
        print(f"saved target {saved['name']} ({saved['kind']})")
        return 0
    if args.action == "remove":
        ws.remove_target(args.name)
        print(f"removed target {args.name}")
        return 0
    from .views.tables import format_table
    rows = [[t["name"], t["kind"], "saved" if t["saved"] else "built-in",
             json.dumps(t["settings"]) if t["settings"] else "-"] for t in ws.targets()]
    print(format_table(rows, ["TARGET", "KIND", "", "SETTINGS"]))
    from .targets import target_class
    for t in ws.targets():
        lines = target_class(t["kind"]).overview(t["settings"]) if t["saved"] else []
        if lines:
            print(f"\n{t['name']} ({t['kind']}):")
            print("\n".join(lines))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="celltrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", "-w", help="workspace folder (default: $CELLTRAIN_WORKSPACE "
                                             "or ./.celltrain)")
    sub = p.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs", aliases=["list"], help="list runs, newest first")
    runs.add_argument("--experiment", "-e")
    runs.add_argument("--status", "-s", choices=states.ALL)
    runs.add_argument("--limit", "-n", type=int, default=50)
    runs.add_argument("--search", "-q", help='runs matching every word: text in the name, id, '
                      'params or tags; lr=0.01, lr<0.1 compare a param or tag')
    runs.add_argument("--columns", "-c", help="metric columns, e.g. val_loss,acc (default: the "
                      "workspace's choice, made in the sidebar)")
    runs.set_defaults(func=cmd_runs)
    show = sub.add_parser("show", help="one run: status, history, metrics, files (a sweep: "
                                       "its trials)")
    show.add_argument("run")
    show.set_defaults(func=cmd_show)
    sweeps = sub.add_parser("sweeps", help="hyperparameter sweeps: trials, best so far")
    sweeps.set_defaults(func=cmd_sweeps)
    logs = sub.add_parser("logs", help="a run's output")
    logs.add_argument("run")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    logs.set_defaults(func=cmd_logs)
    cancel = sub.add_parser("cancel", help="SIGTERM a run, SIGKILL after the grace period")
    cancel.add_argument("run")
    cancel.add_argument("--grace", type=float, default=10.0)
    cancel.set_defaults(func=cmd_cancel)
    models = sub.add_parser("models", help="registered models, versions and aliases")
    models.set_defaults(func=cmd_models)
    targets = sub.add_parser("targets", help="compute targets: the kinds and the saved ones")
    targets.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    targets.add_argument("name", nargs="?")
    targets.add_argument("kind", nargs="?")
    targets.add_argument("settings", nargs="*", help="KEY=VALUE settings of the kind")
    targets.set_defaults(func=cmd_targets)
    base = sub.add_parser("base-image", help="build the offline base image (Debian + torch)")
    base.add_argument("--suite", default="bookworm")
    base.set_defaults(func=cmd_base_image)
    from .serving.commands import add_commands
    add_commands(sub)                  # serve, deployments, stop-deployment
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .workspace import Workspace
    try:
        if args.func is cmd_base_image:    # needs no workspace, and must not make one
            return args.func(None, args)
        if args.func is cmd_targets and args.action != "list":
            if not args.name or (args.action == "add" and not args.kind):
                raise ValueError(f"usage: celltrain targets {args.action} NAME"
                                 + (" KIND [KEY=VALUE ...]" if args.action == "add" else ""))
            return args.func(Workspace(args.workspace), args)   # saving one makes a workspace
        # A view opens only an existing workspace; creating one is submit's job.
        ws = Workspace(args.workspace, create=False)
        return args.func(ws, args)
    except (CelltrainError, FileNotFoundError, ValueError) as e:
        print(f"celltrain: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
