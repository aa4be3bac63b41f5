"""``%%train`` and ``%train``: the notebook's way to send a cell to a run and bring results back.

A thin layer (design rule 4): packaging is ``cell.packing.build_bundle``, starting is
``Experiment.submit``, watching is the run widget (or ``Run`` text streaming), and results come
back with ``cell.packing.load_results``.  Load with ``%load_ext celltrain``.  The ``%train``
subcommands are in ``magic_commands``, argument parsing in ``magic_args``, waiting in
``cell_wait``.
"""
from __future__ import annotations

import linecache
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import safefiles, states
from .cell.python_check import check_python
from .cell.packing import DEFAULT_MAX_MB, build_bundle, load_results
from .cell.pins import auto_pins, read_requirements
from .cell_wait import Adopter, CellRunFailed, StoppedWaiting, stream
from .runtime.wire import RESULTS_FILE, TELEMETRY_DIR
from .errors import CelltrainError
from .magic_args import DEFAULT_EXPERIMENT, cell_number, cell_origin, plain_usage, \
    config_value, flatten, pairs, parse_param
from .magic_commands import TrainCommands

# What a cell's results file may hold: as much as may travel with a cell (the bundle's limit).
MAX_RESULTS_MB = DEFAULT_MAX_MB


class _LinecacheSources:
    """Cell sources by code filename, read from linecache only when asked (IPython keeps them)."""

    def __contains__(self, filename) -> bool:
        return filename in linecache.cache

    def __getitem__(self, filename) -> str:
        return "".join(linecache.cache[filename][2])


@magics_class
class TrainMagics(TrainCommands, Magics):
    """``%%train`` runs a cell in a container; ``%train`` lists, follows and manages runs."""

    def __init__(self, shell):
        super().__init__(shell)
        self.config_values: dict[str, Any] = {}
        self._workspaces: dict[str, Any] = {}

    # -- shared helpers --------------------------------------------------------------------
    def workspace(self, path: str | None = None):
        from .workspace import Workspace, default_path
        key = str(Path(path or self.config_values.get("workspace") or default_path())
                  .expanduser().resolve())
        if key not in self._workspaces:
            self._workspaces[key] = Workspace(key)
        return self._workspaces[key]

    def setting(self, args, name: str, default=None):
        value = getattr(args, name, None)
        if value is None:
            value = self.config_values.get(name, default)
        return value

    @plain_usage
    @magic_arguments()
    @argument("--experiment", "-e", help="experiment to record the run under")
    @argument("--target", help="docker (default), local (a subprocess on this machine, no "
                                "Docker) or a target saved in the workspace (`celltrain "
                                "targets`), e.g. a Ray cluster")
    @argument("--gpus", help="'all', 'none', a count or comma-separated device ids "
                             "(default: all when the engine has a GPU runtime)")
    @argument("--image", help="base image (default: PyTorch image matching this kernel)")
    @argument("--nodes", type=int, default=1, help="nodes (containers) of a distributed run")
    @argument("--procs-per-node", type=int, help="processes per node (default: its GPUs, or 1)")
    @argument("--launcher", choices=("torchrun", "mpi"), help="launcher of a distributed run")
    @argument("--pip", nargs="+", action="append", metavar="PKG",
              help="extra pip packages for the image")
    @argument("--requirements", metavar="FILE", help="a requirements file for the image")
    @argument("--no-pin", action="store_true",
              help="do not pin the packages the cell uses to this kernel's versions")
    @argument("--param", nargs="+", action="append", metavar="NAME=VALUE",
              help="typed values bound in the cell: lr=0.01 epochs=30 aug=true sizes=[1,2]")
    @argument("--out", nargs="+", action="append", metavar="NAME",
              help="variables put back into the notebook after success")
    @argument("-o", dest="handle", metavar="NAME", help="store the Run handle in NAME")
    @argument("--no-wait", action="store_true", help="return the Run handle at once")
    @argument("--cancel-on-interrupt", action="store_true",
              help="interrupting the kernel cancels the run (default: stop waiting only)")
    @argument("--mount", nargs="+", action="append", metavar="HOST:CONTAINER",
              help="read-only data mounts, e.g. --mount ./data:/data")
    @argument("--memory", help="memory limit, e.g. 8g")
    @argument("--cpus", type=float, help="CPU limit")
    @argument("--timeout", type=float, help="seconds before the run is stopped")
    @argument("--env", nargs="+", action="append", metavar="KEY=VALUE",
              help="environment variables for the run")
    @argument("--tag", nargs="+", action="append", metavar="KEY=VALUE", help="run tags")
    @argument("--max-bundle-mb", type=float, default=DEFAULT_MAX_MB,
              help=f"size limit of the variables that travel (default "
                   f"{DEFAULT_MAX_MB:g} MB); mount bigger data")
    @argument("--workspace", help="workspace folder")
    @argument("--register", metavar="MODEL",
              help="after success, register --model-path as the next version of MODEL")
    @argument("--model-path", default="outputs/model.pt",
              help="the run's file or folder to register (default outputs/model.pt)")
    @line_cell_magic
    def train(self, line: str, cell: str | None = None):
        """Run the cell in a container (``%%train``), or manage runs (``%train``).

        The cell is written as if it ran here: it may read the notebook's variables, functions,
        classes and imports, and ``log``, ``progress`` and ``Run`` need no import.  It runs with
        this notebook's package versions; it blocks and shows the run live, and ``--out``
        variables come back into the notebook when it succeeds.  The cell's last expression is
        displayed.  Interrupting the kernel stops the waiting, not the run.

        In [1]: %load_ext celltrain

        In [2]: %%train --experiment birds --param lr=0.01 epochs=30 --out model
           ...: model = make_model()              # defined in an earlier cell
           ...: for epoch in progress(range(epochs)):
           ...:     loss = train_one_epoch(model, loader, lr)
           ...:     log("loss", loss, step=epoch)

        In [3]: %%train --target local --out total -o run
           ...: total = sum(range(10))            # a local subprocess: fast, no Docker

        In [4]: %%train --gpus all --pip timm --mount ./data:/data --no-wait
           ...: ...                               # returns the Run handle at once

        In [5]: %%train --register pytorch-birds --model-path outputs/model.pt
           ...: torch.save(model.state_dict(), "outputs/model.pt")   # a new model version

        Line magic:

        In [6]: %train list --search lr=0.01 --columns val_loss,acc   # runs of the workspace
        In [7]: %train show birds-3                # status, reason, metrics, files
        In [8]: %train logs birds-3                # the run's output
        In [9]: %train attach birds-3              # follow again; bring --out values back
        In [10]: %train cancel birds-3
        In [11]: %train rerun birds-3 --param lr=0.001
        In [12]: %train config image=my/image:tag gpus=all experiment=birds
        """
        if cell is None:
            return self.line(line)
        return self.cell(line, cell)

    # -- %%train ----------------------------------------------------------------------------
    def cell(self, line: str, cell: str):
        try:
            args = parse_argstring(self.train, line)
        except UsageError as e:
            raise UsageError(f"%%train: {e}. `%%train?` lists the options with examples.") \
                from None
        if not cell.strip():
            raise UsageError("%%train: the cell is empty; write the training code under the "
                             "%%train line")
        params: dict[str, Any] = {}
        for item in flatten(args.param):
            name, value = parse_param(item)
            params[name] = value
        out = flatten(args.out)
        mounts = {}
        for item in flatten(args.mount):
            host, sep, inside = item.rpartition(":")
            if not sep or not host or not inside.startswith("/"):
                raise UsageError(f"--mount {item!r} is not HOST:CONTAINER with an absolute "
                                 f"container path: write e.g. --mount ./data:/data")
            if not Path(host).expanduser().exists():
                raise UsageError(f"--mount {item!r}: {host} does not exist on this machine")
            mounts[str(Path(host).expanduser().resolve())] = inside
        if args.register is not None:
            from .registry.names import check_name
            try:
                check_name(args.register)
            except ValueError as e:
                raise UsageError(f"%%train --register: {e}") from None
            if args.no_wait:
                raise UsageError("%%train --register waits for the run to register its model: "
                                 "drop --no-wait, or later call run.register_model(name, path)")
        gpus = self.setting(args, "gpus", "auto")
        if isinstance(gpus, str) and gpus not in ("auto",):
            gpus = config_value("gpus", gpus)
        target = self.setting(args, "target", "docker")
        experiment = self.setting(args, "experiment", DEFAULT_EXPERIMENT)
        image = self.setting(args, "image")
        pip = flatten(args.pip)
        try:
            if args.requirements:
                pip += read_requirements(args.requirements)
            ws = self.workspace(args.workspace)
            bundle = self._bundle(cell, line, out, params, args.max_bundle_mb)
        except (CelltrainError, OSError) as e:
            raise UsageError(str(e)) from None
        try:
            environment = self._environment(ws, target, image, pip, bundle, args.no_pin)
            run = ws.experiment(experiment).submit(
                bundle.script, bundle.folder, environment=environment,
                gpus=gpus, params=params,
                tags={"source": "%%train", **cell_origin(self.shell),
                      **pairs(flatten(args.tag), "--tag")},
                memory=self.setting(args, "memory"), cpus=self.setting(args, "cpus"),
                env_vars=pairs(flatten(args.env), "--env"), mounts=mounts,
                timeout=self.setting(args, "timeout"), target=target,
                snapshot_limit_mb=math.inf, lib_packages=["cloudpickle"], nodes=args.nodes,
                procs_per_node=args.procs_per_node, launcher=args.launcher,
                warm=None if self.setting(args, "warm") is None
                else self.setting(args, "warm") == "on")
        except (CelltrainError, FileNotFoundError, ValueError) as e:
            raise UsageError(f"%%train: {e}") from None
        finally:
            bundle.cleanup()
        if args.handle:
            self.shell.user_ns[args.handle] = run
        if args.no_wait:
            print(f"run {run.id} started ({target}); `%train attach {run.id}` follows it and "
                  f"brings --out values back, `%train cancel {run.id}` stops it")
            self._widget(run)   # in a kernel, the live view goes on after the cell returns
            return run
        result = self.follow(run, out, args.cancel_on_interrupt)
        if args.register is not None:
            self.register(run, args.register, args.model_path)
        return result

    def register(self, run, name: str, path: str):
        """``--register``: the run's file becomes the next version of model ``name``."""
        from .registry.version import register_model
        try:
            model = register_model(run, name, path)
        except (CelltrainError, ValueError, OSError) as e:
            raise UsageError(f"%%train --register: run {run.id} completed but its model was "
                             f"not registered: {e}\n(retry with ws.run({run.id!r})"
                             f".register_model({name!r}, 'PATH'))") from None
        print(f"registered {model.name} version {model.version} from run {run.id}; load it "
              f"with {model.load_hint()}")
        return model

    def _bundle(self, cell: str, line: str, out, params, max_mb):
        shell = self.shell
        filename_map = getattr(getattr(shell, "compile", None), "_filename_map", {}) or {}
        number = cell_number(shell)
        labels = {name: f"Cell In[{n}]" for name, n in filename_map.items()}
        return build_bundle(
            cell, shell.user_ns, out=out, params=params, first_line=2,
            cell_text=f"%%train {line}\n{cell}", label=f"Cell In[{number}]",
            hidden=set(getattr(shell, "user_ns_hidden", {})), folder=os.getcwd(),
            max_mb=max_mb, labels=labels, sources=_LinecacheSources())

    def _environment(self, ws, target: str, image: str | None, pip: list[str], bundle,
                     no_pin: bool):
        """The cell's environment, checked against what the target will run it with (the
        image's Python and packages, for Docker) before anything starts."""
        from .environment import Environment
        from .targets import target_class
        wanted = Environment(pip=pip, base_image=image)
        facts = target_class(ws.target_kind(target)).describe_environment(
            wanted, ws.path / "cache" / "images")
        if facts is None:
            return wanted
        if facts.get("python") and bundle.meta.get("code_by_value"):
            check_python(facts["image"], facts)
        pins = [] if no_pin else auto_pins(bundle.distributions, facts.get("packages"),
                                           explicit=pip)
        if pins:
            print(f"pinning to this kernel's versions: {' '.join(pins)} (--no-pin to skip)")
        return Environment(pip=pip + pins, base_image=image)

    # -- waiting and results ------------------------------------------------------------------
    def follow(self, run, out: list[str] | None = None, cancel_on_interrupt: bool = False):
        """Show the run until it ends, then bring its results back (or show why it failed)."""
        try:
            status, shown = self._wait(run)
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                try:
                    status = run.cancel(grace=10)
                except KeyboardInterrupt:
                    status = run.status
                raise StoppedWaiting(f"interrupted: run {run.id} was canceled ({status})") \
                    from None
            raise StoppedWaiting(
                f"stopped waiting: run {run.id} goes on ({run.status}).\n"
                f"  %train attach {run.id}   follows it again and brings --out values back\n"
                f"  %train cancel {run.id}   stops it") from None
        if status != states.COMPLETED:
            raise CellRunFailed(run, status, run.reason, widget_shown=shown)
        return self.bring_back(run, out)

    def _wait(self, run) -> tuple[str, bool]:
        """Wait for the run's end, shown live; returns its status and whether a widget showed
        it."""
        widget = self._widget(run)
        if widget is None:
            return stream(run), False
        # The store says when the run ended, not the widget: a view must never hang the cell.
        keeper = Adopter(run)
        while not states.is_terminal(status := run.status):
            keeper.check()
            time.sleep(0.05)
        widget.wait(5)   # let it draw the final state
        return status, True

    def _widget(self, run):
        if getattr(self.shell, "kernel", None) is None:
            return None   # a terminal IPython: stream text
        try:
            from .views.widget import show_run
            return show_run(run)
        except Exception as e:  # the live view is a nicety: text streaming always works
            print(f"(live view unavailable: {type(e).__name__}: {e}; streaming the output)")
            return None

    def bring_back(self, run, out: list[str] | None = None):
        path = run.folder / TELEMETRY_DIR / RESULTS_FILE
        try:
            results = _open_results(run.folder, f"{TELEMETRY_DIR}/{RESULTS_FILE}")
        except FileNotFoundError:
            if out:
                raise UsageError(f"run {run.id} has no results file ({path}): was it started "
                                 f"by %%train?") from None
            return None
        except (safefiles.UnsafePath, NotADirectoryError):
            raise UsageError(f"run {run.id}'s results file ({path}) is a link or not a plain "
                             f"file: it is not read (the run's container can write there, and "
                             f"links are never followed); nothing came back") from None
        with results:
            size = os.fstat(results.fileno()).st_size
            if size > MAX_RESULTS_MB * 2**20:
                raise UsageError(
                    f"run {run.id}'s results file ({path}) is {size / 2**20:.0f} MB, over the "
                    f"{MAX_RESULTS_MB:g} MB limit for what comes back to the notebook: save big "
                    f"values under ./outputs (torch.save, np.save) and load them from the "
                    f"run's outputs folder")
            values, value, has_value = load_results(results)
        names = out if out is not None else list(values)
        for name in names:
            if name in values:
                self.shell.user_ns[name] = values[name]
        if names:
            print(f"run {run.id}: {', '.join(n for n in names if n in values)} now in the "
                  f"notebook")
        return value if has_value else None


def _open_results(folder: Path, rel: str):
    """The plain file ``folder/rel``, open for reading, never through a link (a run's
    container writes its telemetry folder): FileNotFoundError, or UnsafePath for a link."""
    fd = safefiles.open_beneath(folder, rel)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise safefiles.UnsafePath(0, f"{rel!r} is not a plain file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(TrainMagics)
    if getattr(ipython, "kernel", None) is not None:     # the status stays Busy while a cell waits
        from .views.subshell import keep_status_busy
        keep_status_busy(ipython.kernel)
    from .magics_sweep import load_ipython_extension as load_sweep   # %%sweep
    load_sweep(ipython)
