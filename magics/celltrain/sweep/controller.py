"""The sweep controller: one detached process per sweep that asks Optuna for trials, runs them
as child runs and stops the ones the policy gives up on.

``python -m celltrain.sweep.controller WORKSPACE SWEEP_ID``.  Like a supervisor it holds the
sweep folder's ``supervisor.lock`` for its life, so ``Workspace.reconcile`` starts a new one
when it dies.  The study lives in the sweep folder (Optuna's journal file, ``study.journal``),
so SQLite keeps its writers to celltrain's own.  Trials map to child runs by the child's tag
``celltrain.trial``: a new controller resumes a running trial without a child by starting
one with the trial's params, and never asks Optuna for a trial twice.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import time
import traceback
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from .. import states
from ..locks import take_lock
from ..spec import RunSpec
from ..workspace import SUPERVISOR_LOCK, SNAPSHOT, Experiment, Workspace, supervisor_alive
from .pruners import make_pruner, make_sampler, why_pruned
from .space import space_from_dict
from .trials import SWEEP_TAG, TRIAL_TAG, arguments, concurrency_limit, final_value, summary

POLL_S = 0.05
ADOPT_EVERY_S = 5.0
JOURNAL = "study.journal"
PRUNED_PREFIX = "early termination:"
EXPIRED = "expired"       # finish(): the sweep's max_duration_s was reached


class Controller:
    def __init__(self, workspace: str | Path, sweep_id: str):
        self.ws = Workspace(workspace, reconcile=False)
        self.store = self.ws.store
        self.sweep_id = sweep_id
        self.folder = self.store.run_dir(sweep_id)
        self.seen: dict[str, int] = {}     # child id -> last metric id fed to Optuna
        self.next_adopt = 0.0

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    def main(self) -> int:
        lock = open(self.folder / SUPERVISOR_LOCK, "a")
        if not take_lock(lock, 1.0):
            return 0   # another controller has this sweep
        record = self.store.get_run(self.sweep_id)
        if record is None or states.is_terminal(record["status"]):
            return 0
        try:
            self.carry(record)
        except Exception as e:   # noqa: BLE001  every failure becomes a state with a reason
            self.log(traceback.format_exc())
            self.cancel_children("the sweep's controller failed")
            self.store.set_status(self.sweep_id, states.FAILED, "controller error",
                                  ended=time.time(),
                                  reason=f"the sweep controller failed: {type(e).__name__}: "
                                         f"{e}; its running trials were canceled")
        return 0

    # -- the study ------------------------------------------------------------------------------
    def open_study(self, spec: RunSpec) -> optuna.Study:
        cfg = spec.sweep
        self.space = space_from_dict(cfg["space"])
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", module="optuna")
        storage = JournalStorage(JournalFileBackend(str(self.folder / JOURNAL)))
        return optuna.create_study(
            storage=storage, study_name=self.sweep_id, direction=cfg["goal"],
            sampler=make_sampler(cfg["sampler"], self.space, cfg.get("seed")),
            pruner=make_pruner(cfg["policy"]), load_if_exists=True)

    def carry(self, record: dict) -> None:
        spec = RunSpec.from_record(record)
        cfg = spec.sweep
        self.cfg, self.spec = cfg, spec
        self.experiment = Experiment(self.ws, record["experiment"])
        study = self.study = self.open_study(spec)
        self.limit = self.concurrency(spec)
        started = record["started"] or time.time()
        duration = cfg.get("max_duration_s")
        self.deadline = None if duration is None else started + duration
        if record["status"] != states.RUNNING:
            self.store.set_status(self.sweep_id, states.RUNNING, "controller started",
                                  started=started)
        else:
            self.log("controller resumed")
        last_summary = None
        while True:
            children = self.children()
            trials = {t.number: t for t in study.get_trials(deepcopy=False)}
            canceled = bool(self.store.get_run(self.sweep_id)["cancel_requested"])
            expired = not canceled and self.deadline is not None and time.time() >= self.deadline
            stopping = canceled or expired
            for number, trial in trials.items():
                child = children.get(number)
                if trial.state != TrialState.RUNNING:
                    continue
                if child is None:
                    if not stopping:
                        children[number] = self.start_child(trial)   # resumed after a kill
                    else:
                        self.tell(number, state=TrialState.FAIL)
                elif states.is_terminal(child["status"]):
                    self.finish_trial(trial, child)
                elif not stopping:
                    self.feed(trial, child)
            active = [c for c in children.values() if not states.is_terminal(c["status"])]
            self.adopt(active)
            if stopping:
                if active:
                    self.cancel_children("the sweep was canceled" if canceled else
                                         f"the sweep's {self.duration_limit()} was reached",
                                         active)
                else:
                    self.finish(states.CANCELED if canceled else EXPIRED, children)
                    return
            trials = study.get_trials(deepcopy=False)
            while (not stopping and len(active) < self.limit
                   and len(trials) < cfg["max_runs"] and not self.hopeless(trials)):
                trial = study.ask()
                child = self.start_child(trial)
                active.append(child)
                trials = study.get_trials(deepcopy=False)
            now = summary(trials, self.store.child_runs(self.sweep_id), cfg)
            if now != last_summary:
                self.record_summary(now, last_summary)
                last_summary = now
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if not stopping and not active and not running and (
                    len(trials) >= cfg["max_runs"] or self.hopeless(trials)):
                self.finish(None, self.children())
                return
            time.sleep(POLL_S)

    def duration_limit(self) -> str:
        seconds = self.cfg["max_duration_s"]
        return f"duration limit (max_duration_s={seconds:g}, {seconds / 60:.3g} min)"

    def concurrency(self, spec) -> int:
        """max_concurrent, bounded by the GPUs the target has for trials that ask for some."""
        from ..targets import target_class
        cls = target_class(self.store.get_run(self.sweep_id)["target"])
        self.one_machine = cls.one_machine
        self.gpus_total = (cls.gpu_count(spec.target_settings)
                           if spec.resources.gpus not in (None, "none", 0) else None)
        limit = concurrency_limit(self.cfg["max_concurrent"], spec.resources.gpus,
                                  self.gpus_total)
        if limit < self.cfg["max_concurrent"]:
            self.log(f"at most {limit} trials at once: the target's GPUs hold no more "
                     f"(max_concurrent={self.cfg['max_concurrent']}, gpus={spec.resources.gpus})")
        return limit

    def tell(self, number: int, value: float | None = None, state=None) -> None:
        """``study.tell``; the grid sampler's ``study.stop()`` when its grid is done is for
        ``optimize`` loops (and raises outside one): the trial is stored all the same, and
        ``max_runs`` (capped at the grid's size) ends the sweep."""
        try:
            self.study.tell(number, value, state=state)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise

    def children(self) -> dict[int, dict]:
        out = {}
        for child in self.store.child_runs(self.sweep_id):
            number = child["tags"].get(TRIAL_TAG)
            if number is not None:
                out[int(number)] = child
        return out

    def hopeless(self, trials) -> bool:
        """Every trial so far failed, and enough of them to say the script is broken: start no
        more (the sweep then fails with their common reason)."""
        failed = sum(t.state == TrialState.FAIL for t in trials)
        others = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        return others == 0 and failed >= min(self.cfg["max_runs"],
                                             max(3, self.cfg["max_concurrent"]))

    # -- trials and their runs -------------------------------------------------------------------
    def start_child(self, trial) -> dict:
        if not isinstance(trial, optuna.Trial):
            trial = optuna.Trial(self.study, trial._trial_id)
        params = {name: p.suggest(trial, name) for name, p in self.space.items()}
        spec = self.spec.replace(
            kind="trial", parent=self.sweep_id, sweep={},
            resources=self.devices_for_trial(),
            source_dir=str(self.folder / SNAPSHOT),
            args=[*self.spec.args, *arguments(params)],
            params={**self.spec.params, **params},
            tags={**self.spec.tags, SWEEP_TAG: self.sweep_id, TRIAL_TAG: str(trial.number)})
        limit = self.cfg.get("snapshot_limit_mb")
        run = self.experiment.submit_spec(spec, **({} if limit is None else
                                                   {"snapshot_limit_mb": limit}))
        self.log(f"trial {trial.number}: run {run.id} with {params}")
        return self.store.get_run(run.id)

    def devices_for_trial(self):
        """The trial's resources: GPUs it asks for by count get device ids no running trial
        holds, so two trials never share a GPU (the target only counts them otherwise)."""
        res = self.spec.resources
        free = getattr(self, "gpus_total", None)
        if free is None or isinstance(res.gpus, (bool, str, list, tuple)) or not res.gpus \
                or not getattr(self, "one_machine", True):   # a cluster places GPUs itself
            return res
        held = set()
        for child in self.store.child_runs(self.sweep_id):
            if not states.is_terminal(child["status"]) and child.get("spec"):
                gpus = (child["spec"].get("resources") or {}).get("gpus")
                held.update(gpus if isinstance(gpus, list) else [])
        ids = [i for i in range(free) if i not in held][:int(res.gpus)]
        if len(ids) < int(res.gpus):     # fewer than asked: as the user wrote it, the run says
            return res
        return dataclasses.replace(res, gpus=ids)

    def feed(self, trial, child: dict) -> None:
        """New points of the primary metric go to Optuna; a pruned trial's run is stopped."""
        metric = self.cfg["metric"]
        points = self.store.metric_series(child["id"], metric, self.seen.get(child["id"], 0))
        if not points:
            return
        self.seen[child["id"]] = points[-1][0]
        live = optuna.Trial(self.study, trial._trial_id)
        reported = set(trial.intermediate_values)
        for _, _, step, value, _ in points:
            if value is None or step in reported:
                continue
            live.report(value, step)
            reported.add(step)
            if live.should_prune():
                self.prune(live, child, step, value)
                return

    def prune(self, trial, child: dict, step: int, value: float) -> None:
        reason = why_pruned(self.cfg["policy"], self.study, trial, step, value,
                            self.cfg["metric"])
        options = dict(child["options"], cancel_reason=reason, pruned_at=time.time(),
                       pruned_step=step,
                       cancel_grace=self.cfg.get("cancel_grace", 5.0))
        self.store.update_run(child["id"], cancel_requested=1, options=options)
        self.tell(trial.number, state=TrialState.PRUNED)
        self.log(f"trial {trial.number}: run {child['id']}: {reason}")

    def finish_trial(self, trial, child: dict) -> None:
        """Tell Optuna how the trial's run ended (its last primary-metric value if it
        completed)."""
        if child["status"] == states.COMPLETED:
            value = final_value(self.store, child["id"], self.cfg["metric"])
            if value is not None:
                self.tell(trial.number, value)
                return
            self.store.update_run(child["id"], reason=(
                f"the run logged no {self.cfg['metric']!r} (the sweep's metric): log it with "
                f"Run.get_context().log({self.cfg['metric']!r}, value)"))
        self.tell(trial.number, state=TrialState.FAIL)

    def adopt(self, active: list[dict]) -> None:
        """A child whose supervisor died gets a new one (as reconcile would)."""
        if time.monotonic() < self.next_adopt:
            return
        self.next_adopt = time.monotonic() + ADOPT_EVERY_S
        for child in active:
            if child["status"] != states.QUEUED and \
                    not supervisor_alive(self.store.run_dir(child["id"])):
                self.ws.spawn_supervisor(child["id"])

    def cancel_children(self, why: str, active: list[dict] | None = None) -> None:
        if active is None:
            active = [c for c in self.store.child_runs(self.sweep_id)
                      if not states.is_terminal(c["status"])]
        grace = (self.store.get_run(self.sweep_id)["options"] or {}).get("cancel_grace", 10.0)
        for child in active:
            if not child["cancel_requested"]:
                options = dict(child["options"], cancel_reason=f"canceled: {why}",
                               cancel_grace=grace)
                self.store.update_run(child["id"], cancel_requested=1, options=options)

    # -- the sweep's own record ------------------------------------------------------------------
    def record_summary(self, now: dict, before: dict | None) -> None:
        progress = {"n": now["finished"], "total": self.cfg["max_runs"],
                    "desc": now["desc"], "done": False, "best": now["best"]}
        self.store.update_run(self.sweep_id, progress=progress)
        best = now["best"]
        if best and (before is None or before["best"] != best):
            self.store.add_metrics(self.sweep_id, [(f"best_{self.cfg['metric']}",
                                                    now["finished"], best["value"],
                                                    time.time())])

    def finish(self, status: str | None, children: dict[int, dict]) -> None:
        trials = self.study.get_trials(deepcopy=False)
        done = summary(trials, list(children.values()), self.cfg)
        self.record_summary(done, None)
        progress = dict(self.store.get_run(self.sweep_id)["progress"] or {}, done=True)
        if status == states.CANCELED:
            self.store.set_status(self.sweep_id, states.CANCELED, ended=time.time(),
                                  progress=progress,
                                  reason=f"canceled by the user after {done['finished']} "
                                         f"trials; its running trials were canceled")
        elif status == EXPIRED:
            # HyperDrive's max_duration_minutes: what finished counts; no result, no success
            some = any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            self.store.set_status(
                self.sweep_id, states.COMPLETED if some else states.CANCELED, done["desc"],
                ended=time.time(), progress=progress,
                reason=f"stopped: the sweep's {self.duration_limit()} was reached after "
                       f"{done['finished']} finished trials; no new trial was started and the "
                       f"running ones were canceled")
        elif any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
            # stopped early is not failed: a sweep whose every trial was stopped completed
            self.store.set_status(self.sweep_id, states.COMPLETED, done["desc"],
                                  ended=time.time(), progress=progress)
        else:
            reasons = collections.Counter(c["reason"] or c["status"] for c in children.values())
            common, count = reasons.most_common(1)[0] if reasons else ("no trial ran", 0)
            self.store.set_status(self.sweep_id, states.FAILED, ended=time.time(),
                                  progress=progress,
                                  reason=f"every trial failed ({len(children)}; {count} with "
                                         f"this reason): {common}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m celltrain.sweep.controller WORKSPACE SWEEP_ID", file=sys.stderr)
        return 2
    return Controller(argv[0], argv[1]).main()


if __name__ == "__main__":
    sys.exit(main())
