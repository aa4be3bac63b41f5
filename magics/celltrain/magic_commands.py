"""``%train`` subcommands: list, show, logs, attach, cancel, rerun, config.

``TrainCommands`` is mixed into ``TrainMagics`` (``magics``); ``rerun`` submits a run again
from its own snapshot.
"""
from __future__ import annotations

import json
import math
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

from .runtime.cellrunner import BUNDLE_DIR, META_FILE
from .cell_wait import CellRunFailed, StoppedWaiting
from .errors import CelltrainError
from .magic_args import CONFIG_KEYS, config_value, flatten, parse_param
from .store.settings import check_columns

SUBCOMMANDS = ("list", "show", "logs", "attach", "cancel", "rerun", "config")


class TrainCommands:
    """``%train list|show|logs|attach|cancel|rerun|config``; ``TrainMagics`` supplies
    ``workspace()``, ``follow()``, ``shell`` and ``config_values``."""

    # -- %train -------------------------------------------------------------------------------
    def line(self, line: str):
        words = shlex.split(line)
        if not words or words[0] not in SUBCOMMANDS:
            given = f" {words[0]!r}" if words else ""
            raise UsageError(f"%train{given}: use one of {', '.join(SUBCOMMANDS)}, e.g. "
                             f"`%train list`; `%%train` (two %) runs a cell. `%train?` has "
                             f"examples.")
        command, rest = words[0], words[1:]
        try:
            return getattr(self, f"_cmd_{command}")(rest)
        except CelltrainError as e:
            if isinstance(e, (CellRunFailed, StoppedWaiting)):
                raise
            raise UsageError(f"%train {command}: {e}") from None

    @staticmethod
    def _parser(command: str, *arguments) -> MagicArgumentParser:
        parser = MagicArgumentParser(prog=f"%train {command}", add_help=False)
        for names, kwargs in arguments:
            parser.add_argument(*names, **kwargs)
        return parser

    def _parse(self, command, rest, *arguments):
        try:
            return self._parser(command, *arguments).parse_args(rest)
        except UsageError as e:
            raise UsageError(f"%train {command}: {e}") from None

    RUN_ARG = (("run",), {"help": "run id (or its unique start)"})

    def _cmd_list(self, rest):
        args = self._parse("list", rest, (("--experiment", "-e"), {}),
                           (("--limit", "-n"), {"type": int, "default": 50}),
                           (("--search", "-q"), {}), (("--columns", "-c"), {}))
        ws = self.workspace()
        try:
            columns = check_columns(args.columns) if args.columns else None
            if getattr(self.shell, "kernel", None) is not None:
                try:
                    return ws.runs_table(experiment=args.experiment, limit=args.limit,
                                         search=args.search, metrics=columns)
                except ImportError:
                    pass
            from .cli import cmd_runs
            cmd_runs(ws, _ns(experiment=args.experiment, status=None, limit=args.limit,
                             search=args.search, columns=args.columns))
        except ValueError as e:       # a search or columns that cannot be read
            raise UsageError(f"%train list: {e}") from None
        return None

    def _cmd_show(self, rest):
        from .cli import cmd_show
        args = self._parse("show", rest, self.RUN_ARG)
        cmd_show(self.workspace(), args)

    def _cmd_logs(self, rest):
        args = self._parse("logs", rest, self.RUN_ARG)
        sys.stdout.write(self.workspace().run(args.run).logs())

    def _cmd_cancel(self, rest):
        args = self._parse("cancel", rest, self.RUN_ARG,
                           (("--grace",), {"type": float, "default": 10.0}))
        run = self.workspace().run(args.run)
        status = run.cancel(grace=args.grace)
        print(f"run {run.id}: {status}")

    def _cmd_attach(self, rest):
        args = self._parse("attach", rest, self.RUN_ARG,
                           (("--cancel-on-interrupt",), {"action": "store_true"}))
        run = self.workspace().run(args.run)
        return self.follow(run, _cell_meta(run).get("out", []), args.cancel_on_interrupt)

    def _cmd_rerun(self, rest):
        args = self._parse("rerun", rest, self.RUN_ARG,
                           (("--param",), {"nargs": "+", "action": "append"}),
                           (("--no-wait",), {"action": "store_true"}),
                           (("-o",), {"dest": "handle"}))
        ws = self.workspace()
        old = ws.run(args.run)
        record = old.record
        params = dict(record["params"])
        for item in flatten(args.param):
            name, value = parse_param(item)
            params[name] = value
        run = rerun(ws, old, params)
        if args.handle:
            self.shell.user_ns[args.handle] = run
        print(f"run {run.id}: rerun of {old.id} with {json.dumps(params)}")
        if args.no_wait:
            return run
        return self.follow(run, _cell_meta(run).get("out", []))

    def _cmd_config(self, rest):
        if not rest:
            width = max(map(len, CONFIG_KEYS))
            for key, help_text in CONFIG_KEYS.items():
                value = self.config_values.get(key)
                shown = "-" if value is None else str(value)
                print(f"{key.ljust(width)}  {shown.ljust(20)}  {help_text}")
            return None
        for item in rest:
            key, sep, value = item.partition("=")
            if not sep or key not in CONFIG_KEYS:
                raise UsageError(f"%train config {item!r}: write KEY=VALUE with KEY one of "
                                 f"{', '.join(CONFIG_KEYS)} (KEY= unsets it)")
            if value == "":
                self.config_values.pop(key, None)
                continue
            self.config_values[key] = config_value(key, value)
        return None


def _ns(**kwargs):
    import argparse
    return argparse.Namespace(**kwargs)


def _cell_meta(run) -> dict:
    path = run.folder / "snapshot" / BUNDLE_DIR / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def rerun(ws, old, params: dict):
    """Submit a run again from its own snapshot, with the same spec and new params."""
    from .spec import RunSpec
    record = old.record
    spec = RunSpec.from_record(record).replace(
        source_dir=str(old.folder / "snapshot"), params=params,
        tags={**record["tags"], "rerun_of": old.id}, kind="run", parent=None)
    return ws.experiment(record["experiment"]).submit_spec(spec, snapshot_limit_mb=math.inf,
                                                           validated=False)
