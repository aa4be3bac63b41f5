"""Sweeps as text: ``celltrain sweeps`` (every sweep) and ``celltrain show SWEEP`` (its trials)."""
from __future__ import annotations

import json

from .tables import format_table


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_sweeps(ws) -> str:
    rows = []
    for r in ws.store.list_runs():
        if r.get("kind") != "sweep":
            continue
        cfg = (r.get("spec") or {}).get("sweep") or {}
        progress = r["progress"] or {}
        best = progress.get("best") or {}
        rows.append([r["id"], r["experiment"], r["status"],
                     f"{progress.get('n', 0)}/{cfg.get('max_runs', '?')}",
                     f"{cfg.get('metric', '?')} ({cfg.get('goal', '?')})",
                     _num(best.get("value")), best.get("run") or "-"])
    if not rows:
        return f"no sweeps in {ws.path}"
    return format_table(rows, ["SWEEP", "EXPERIMENT", "STATUS", "TRIALS", "METRIC", "BEST",
                               "BEST RUN"])


def format_sweep(sweep) -> str:
    """The sweep's settings, its best trial and a table of its trials, best first."""
    r, cfg = sweep.record, sweep.settings
    policy = cfg.get("policy") or {"name": "none"}
    lines = [f"sweep       {r['id']}  ({r['experiment']} #{r['number']}, target {r['target']})",
             f"status      {r['status']}" + (f" - {r['reason']}" if r["reason"] else ""),
             f"script      {r['script']} {' '.join(r['args'])}",
             f"metric      {cfg['metric']} ({cfg['goal']}), sampler {cfg['sampler']['name']}, "
             f"early termination {policy['name']}",
             f"limits      {cfg['max_runs']} runs, {cfg['max_concurrent']} at once",
             "space       " + ", ".join(f"{k}={_space(v)}" for k, v in cfg["space"].items())]
    best = sweep.best()
    if best:
        lines.append(f"best        trial {best['trial']} run {best['run']}: "
                     f"{cfg['metric']}={_num(best['value'])} {json.dumps(best['params'])}")
    trials = sweep.trials()
    names = list(cfg["space"])
    goal = cfg["goal"]
    trials.sort(key=lambda t: (t["value"] is None,
                               -(t["value"] or 0) if goal == "maximize" else (t["value"] or 0)))
    rows = [[t["trial"], t["run"], t["status"] + (" (stopped)" if t["pruned"] else ""),
             _num(t["value"]), t["steps"], *[_param(t["params"].get(n)) for n in names]]
            for t in trials]
    lines += ["trials", format_table(rows, ["TRIAL", "RUN", "STATUS", cfg["metric"].upper(),
                                            "STEPS", *names]) if rows else "  none yet"]
    stopped = [t for t in trials if t["reason"] and t["status"] != "Completed"]
    for t in stopped:
        lines.append(f"  trial {t['trial']}: {t['reason']}")
    return "\n".join(lines)


def _space(d: dict) -> str:
    if d["kind"] == "choice":
        return f"choice({d['values']})"
    return f"{d['kind']}({', '.join(_param(d[k]) for k in ('low', 'high', 'step') if k in d)})"
