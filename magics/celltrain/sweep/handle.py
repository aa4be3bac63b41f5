"""``Sweep``: a handle on a sweep, a run of kind "sweep" whose children are its trials.

It reads the store only (never the Optuna journal), so it works from any process and after a
kernel restart: ``ws.sweep(id)``.  ``wait`` and ``cancel`` are the run's own: the controller
cancels the running trials when the sweep is canceled.
"""
from __future__ import annotations

from typing import Any

from .. import states
from ..run import Run
from .trials import TRIAL_TAG, better, final_value


class Sweep(Run):
    """A hyperparameter sweep: its trials, the best one, its views."""

    @classmethod
    def of(cls, run: Run) -> "Sweep":
        kind = run.record.get("kind")
        if kind != "sweep":
            raise ValueError(f"run {run.id} is a {kind!r} run, not a sweep: `celltrain "
                             f"sweeps` lists the sweeps")
        return cls(run.workspace, run.id)

    def __repr__(self) -> str:
        return f"<Sweep {self.id} {self.status}>"

    @property
    def settings(self) -> dict[str, Any]:
        """Space, sampler, policy, metric, goal and limits, as stored in the sweep's spec."""
        return self.record["spec"]["sweep"]

    @property
    def metric_name(self) -> str:
        return self.settings["metric"]

    def runs(self) -> list[Run]:
        """The trials' runs, in the order they started."""
        return [Run(self.workspace, c["id"]) for c in self.workspace.store.child_runs(self.id)]

    def trials(self) -> list[dict[str, Any]]:
        """One dict per trial: trial, run, status, value (its last primary-metric value),
        best (its best value), steps, pruned, reason, params."""
        store, metric = self.workspace.store, self.metric_name
        goal = self.settings["goal"]
        out = []
        for c in store.child_runs(self.id):
            values = [v for _, _, _, v, _ in store.metric_series(c["id"], metric)
                      if v is not None]
            best = None
            for v in values:
                best = v if best is None or better(v, best, goal) else best
            out.append({"trial": int(c["tags"].get(TRIAL_TAG, -1)), "run": c["id"],
                        "status": c["status"], "value": values[-1] if values else None,
                        "best": best, "steps": len(values),
                        "pruned": bool(c["options"].get("pruned_at")),
                        "reason": c["reason"], "started": c["started"], "ended": c["ended"],
                        "params": {k: c["params"].get(k) for k in self.settings["space"]}})
        return out

    def trials_table(self):
        """The trials as a pandas DataFrame (a list of flat dicts without pandas), best first."""
        goal = self.settings["goal"]
        rows = [{**{k: v for k, v in t.items() if k != "params"}, **t["params"]}
                for t in self.trials()]
        rows.sort(key=lambda r: (r["value"] is None,
                                 -(r["value"] or 0) if goal == "maximize" else (r["value"] or 0)))
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def best_run(self, include_failed: bool = False) -> Run | None:
        """The trial run with the best final primary-metric value: completed ones only, unless
        ``include_failed`` (then failed and stopped trials count with their last value)."""
        allowed = states.TERMINAL if include_failed else {states.COMPLETED}
        goal, metric, store = self.settings["goal"], self.metric_name, self.workspace.store
        best_id, best_value = None, None
        for c in store.child_runs(self.id):
            if c["status"] not in allowed:
                continue
            value = final_value(store, c["id"], metric)
            if value is not None and (best_value is None or better(value, best_value, goal)):
                best_id, best_value = c["id"], value
        return Run(self.workspace, best_id) if best_id else None

    def best(self) -> dict[str, Any] | None:
        """The best completed trial so far as the controller recorded it (trial, run, value,
        params)."""
        return (self.record["progress"] or {}).get("best")

    def show(self, live: bool = True):
        """The live sweep view: trials table, best-so-far curve, every trial's metric,
        parallel coordinates."""
        from ..views.sweep_view import show_sweep
        return show_sweep(self, live=live)
