"""``%%sweep``: a cell swept over a search space, as ``%%train`` runs it once.

A thin layer (design rule 4): the cell is packaged as ``%%train`` packages it (its ``--param``
names are bound names in every trial, from the trial's params), and the sweep is
``Experiment.sweep``.  It returns the ``Sweep`` at once and shows its live view; ``--wait``
blocks until the sweep ends.  Options set with ``%train config`` apply here too.
"""
from __future__ import annotations

import math
import time

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import states
from .cell.packing import DEFAULT_MAX_MB
from .errors import CelltrainError
from .magic_args import DEFAULT_EXPERIMENT, plain_usage, flatten, pairs
from .magics import TrainMagics


@magics_class
class SweepMagics(TrainMagics):
    """Only ``%%sweep`` is registered by this class; it shares ``%%train``'s packaging."""

    def __init__(self, shell):
        super().__init__(shell)
        train = shell.magics_manager.registry.get("TrainMagics")
        if train is not None:   # one `%train config`, one set of open workspaces
            self.config_values, self._workspaces = train.config_values, train._workspaces

    @plain_usage
    @magic_arguments()
    @argument("--param", action="append", metavar="NAME=DIST", required=True,
              help="a swept name: lr=loguniform(1e-4,1e-1) momentum=uniform(0.9,0.99) "
                   "bs=choice(16,32,64) n=randint(1,8) q=quniform(0,1,0.1)")
    @argument("--metric", required=True, help="the logged metric to optimize, e.g. val_acc")
    @argument("--goal", default="maximize", choices=("maximize", "minimize", "max", "min"))
    @argument("--sampler", default="tpe", choices=("tpe", "random", "grid"))
    @argument("--early-termination", default="none",
              choices=("none", "median", "bandit", "truncation"))
    @argument("--max-runs", type=int, default=16)
    @argument("--max-concurrent", type=int, default=4)
    @argument("--seed", type=int)
    @argument("--max-duration", type=float, metavar="SECONDS",
              help="end the sweep after this long: no new trial starts, running ones are "
                   "canceled")
    @argument("--experiment", "-e")
    @argument("--target", help="docker (default), local or a target saved in the workspace")
    @argument("--gpus")
    @argument("--image")
    @argument("--pip", nargs="+", action="append", metavar="PKG")
    @argument("--memory")
    @argument("--timeout", type=float, help="seconds before each trial is stopped")
    @argument("--tag", nargs="+", action="append", metavar="KEY=VALUE")
    @argument("--workspace")
    @argument("-o", dest="handle", metavar="NAME", help="store the Sweep handle in NAME")
    @argument("--wait", action="store_true", help="block until the sweep ends")
    @cell_magic
    def sweep(self, line: str, cell: str):
        """Sweep the cell over the ``--param`` space: one run per trial, Optuna choosing.

        In [1]: %%sweep --param lr=loguniform(1e-4,1e-1) --metric val_acc --max-runs 8
           ...: for epoch in range(5):
           ...:     log("val_acc", evaluate(train_one_epoch(lr)), step=epoch)
        """
        from .sweep.space import BadSpace, parse_param
        try:
            args = parse_argstring(self.sweep, line)
        except UsageError as e:
            raise UsageError(f"%%sweep: {e}. `%%sweep?` lists the options.") from None
        if not cell.strip():
            raise UsageError("%%sweep: the cell is empty; write the training code under it")
        try:
            space = dict(parse_param(p) for p in args.param)
        except BadSpace as e:
            raise UsageError(f"%%sweep: {e}") from None
        target = self.setting(args, "target", "docker")
        gpus = self.setting(args, "gpus", "auto")
        policy = None if args.early_termination == "none" else args.early_termination
        try:
            ws = self.workspace(args.workspace)
            bundle = self._bundle(cell, line, [], dict.fromkeys(space),
                                  DEFAULT_MAX_MB)
        except (CelltrainError, OSError) as e:
            raise UsageError(f"%%sweep: {e}") from None
        try:
            environment = self._environment(ws, target, self.setting(args, "image"),
                                            flatten(args.pip), bundle, False)
            sweep = ws.experiment(self.setting(args, "experiment", DEFAULT_EXPERIMENT)).sweep(
                bundle.script, bundle.folder, environment=environment, gpus=gpus,
                params=space, metric=args.metric, goal=args.goal, sampler=args.sampler,
                early_termination=policy, max_runs=args.max_runs,
                max_concurrent=args.max_concurrent, seed=args.seed,
                max_duration_s=args.max_duration,
                tags={"source": "%%sweep", **pairs(flatten(args.tag), "--tag")},
                memory=self.setting(args, "memory"), timeout=self.setting(args, "timeout"),
                target=target, lib_packages=["cloudpickle"], snapshot_limit_mb=math.inf)
        except (CelltrainError, FileNotFoundError, ValueError) as e:
            raise UsageError(f"%%sweep: {e}") from None
        finally:
            bundle.cleanup()
        if args.handle:
            self.shell.user_ns[args.handle] = sweep
        if getattr(self.shell, "kernel", None) is not None:
            try:
                sweep.show()
            except Exception as e:  # noqa: BLE001  the view is a nicety
                print(f"(live view unavailable: {type(e).__name__}: {e})")
        print(f"sweep {sweep.id} started: {args.max_runs} trials, {args.max_concurrent} at "
              f"once; `celltrain show {sweep.id}` lists its trials")
        if args.wait:
            while not states.is_terminal(status := sweep.status):
                time.sleep(0.2)
            print(f"sweep {sweep.id}: {status}" + (f" - {sweep.reason}" if sweep.reason else ""))
        return sweep


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(SweepMagics)
