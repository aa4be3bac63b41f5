"""A warm worker: a Python that has paid for ``import torch`` once and forks one process per run.

``python -m celltrain.runtime.warmworker FOLDER IDLE_S`` runs as the main process of a worker
container (``targets/docker/warm.py`` starts it); with ``--host`` it is a process of this
machine (``targets/localwarm.py``), which kills only its own descendants, leaves ``/tmp`` alone
and reports no OOM (no cgroup of its own).  ``FOLDER`` is the workspace's
``warm/<key>/``, mounted read-write; the host and the worker speak through files in it:

- ``imports.json`` (host): the statements to run before waiting (torch, the cell's imports);
- ``ready`` (worker): written once they ran;
- ``claim`` (host, created exclusively): the run the worker is lent to; the worker takes it
  itself ("closing") when it leaves after ``IDLE_S`` seconds without one, so a host never
  claims a worker that is leaving;
- ``request.json`` (host): the run to start: ``{"run", "argv", "env", "boot"}``; a host
  worker's also names the run's own ``snapshot``, ``workdir``, ``stdout`` and ``stderr``, and
  ``env_only`` (the child gets ``env``, not the worker's environment plus ``env``).  The worker takes it
  by renaming it to ``<run>/request.json``; the host may withdraw it the same way (to
  ``<run>/withdrawn.json``) when the worker does not take it, and then starts the run cold: one
  rename wins, so a run never starts twice;
- ``<run>/`` (host: ``snapshot/`` and ``telemetry/``; worker: ``started`` (the child's pid,
  written once it is forked), ``stdout``, ``stderr``, ``stop`` handling, ``exit.json``).

Each run is a child forked from the worker: a new session, its own environment, working folder
(a copy of the snapshot) and output files; it runs the script as ``python -u script args``
would.  The worker never starts a thread or touches a GPU, so the fork is clean and CUDA starts
in the child.  After the child, every other process in the container is killed and the
previous run's folders are removed before the next one starts: nothing of one run reaches the
next but the modules imported before the fork.

Standard library only, Python 3.8.
"""
import importlib.util
import json
import os
import runpy
import shutil
import signal
import sys
import tempfile
import time

from .wire import TELEMETRY_ENV, WORKDIR_NOTE

POLL_S = 0.005
RUN_ROOT = "/celltrain-run"
HOST = {"on": False}    # --host: a process of this machine, not a container's main process
OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def oom_kills():
    """The container's OOM-kill count (cgroup v2 ``memory.events``, v1 ``oom_control``)."""
    for path in OOM_FILES if not HOST["on"] else ():
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def preload(folder):
    """Run the import statements the host asked for; a failing one is the child's to report."""
    try:
        with open(os.path.join(folder, "imports.json")) as f:
            statements = json.load(f)
    except (OSError, ValueError):
        statements = []
    space = {}
    for statement in ["import celltrain.runtime.context"] + list(statements):
        try:
            exec(statement, space)
        except BaseException:  # noqa: BLE001  (an import may raise anything, even SystemExit)
            pass


def kill_others():
    """Kill every process in the container but its init and this worker (a run's leftovers);
    on the host, every descendant of this worker (orphans come to it: a subreaper)."""
    me = os.getpid()
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, me):
            try:
                with open("/proc/%s/stat" % name) as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    doomed = set(parents) if not HOST["on"] else set()
    grew = HOST["on"]
    while grew:
        found = {pid for pid, parent in parents.items() if parent in doomed | {me}}
        grew = not found <= doomed
        doomed |= found
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def reap():
    """Collect the exits of processes that came to this worker (a host worker's orphans)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def tidy(folder, keep, baseline):
    """Remove earlier runs' folders (here and in the container) and what they left in /tmp."""
    for root in (folder,) if HOST["on"] else (folder, RUN_ROOT):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            path = os.path.join(root, name)
            if name != keep and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
    for name in set(os.listdir("/tmp")) - baseline if not HOST["on"] else ():
        path = os.path.join("/tmp", name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass


def child(folder, request, base_env):
    """In the forked child: become the run's process and run its script (behind the boot
    module, ``request["boot"]``, when there is one); returns the code."""
    run = request["run"]
    here = os.path.join(folder, run)
    os.setsid()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")      # the run, not the worker, is the one the OOM killer takes
    except OSError:
        pass
    os.environ.clear()
    os.environ.update({} if request.get("env_only") else base_env)
    os.environ.update(request["env"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(request.get("stdout") or os.path.join(here, "stdout"), flags, 0o644)
    err = os.open(request.get("stderr") or os.path.join(here, "stderr"), flags, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    import io
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                                   write_through=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False),
                                                   errors="backslashreplace",
                                                   write_through=True)
    workdir = request.get("workdir") or os.path.join(RUN_ROOT, run, "src")
    try:
        os.makedirs(workdir)
    except OSError:
        workdir = tempfile.mkdtemp()
    shutil.copytree(request.get("snapshot") or os.path.join(here, "snapshot"), workdir,
                    symlinks=True, dirs_exist_ok=True)
    telemetry = request["env"].get(TELEMETRY_ENV)
    if telemetry and not request.get("workdir"):   # where the host finds ./outputs
        write_atomic(os.path.join(telemetry, WORKDIR_NOTE), workdir + "\n")
    os.chdir(workdir)
    if "numpy.random" in sys.modules:   # `random` reseeds itself after a fork; numpy does not
        sys.modules["numpy.random"].seed()
    script = os.path.abspath(request["argv"][0])
    boot = request.get("boot")
    try:
        if boot:    # as ``python -u -m BOOT SCRIPT ARGS``: run_module sets argv[0] itself
            sys.argv = ["-m"] + list(request["argv"])
            sys.path[0] = workdir
            first = importlib.util.find_spec(boot).origin
            runpy.run_module(boot, run_name="__main__", alter_sys=True)
        else:       # as ``python -u SCRIPT ARGS``
            sys.argv = list(request["argv"])
            sys.path[0] = os.path.dirname(script)
            first = script
            runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  (as Python would: the traceback, exit code 1)
        tb = e.__traceback__    # from the first frame of the user's (or the boot's) code on
        while tb is not None and tb.tb_frame.f_code.co_filename != first:
            tb = tb.tb_next
        sys.excepthook(type(e), e, tb or e.__traceback__)
        return 1
    return 0


def finish(folder, request, base_env, done_fd):
    """The child's whole life: its script, then what Python does at exit (non-daemon threads
    joined, ``atexit``, output flushed) but not the teardown of every module the worker
    imported, which would touch, and so copy, all of the worker's memory (seconds for torch).
    The exit code goes to ``done_fd`` too: the worker need not wait for the kernel to take
    down a process of torch's size (0.1-0.5 s) to say how the run ended."""
    try:
        code = child(folder, request, base_env)
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001  (a failure before the script: as Python reports it)
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write("%s\n" % (code,))
        code = 1
    import atexit
    import threading
    for step in (getattr(threading, "_shutdown", None), atexit._run_exitfuncs):
        try:
            if step is not None:
                step()
        except BaseException:  # noqa: BLE001
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        os.write(done_fd, bytes([code & 0xFF]))
    except OSError:
        pass
    return code & 0xFF


def supervise(folder, run, pid, before, done_fd):
    """Wait for the run's child; a ``stop`` file asks for SIGTERM, then SIGKILL after its grace.
    A child that said its exit code on ``done_fd`` has ended as far as the run goes: what is
    left of it (and any process it started) is killed and the exit noted at once."""
    here = os.path.join(folder, run)
    kill_at = None
    said = None
    while True:
        try:
            said = os.read(done_fd, 1) or None
        except BlockingIOError:
            pass
        if said is not None:
            kill_others()             # its leftovers; the process itself may still be exiting
            status = said[0] << 8     # as waitpid reports an exit with that code
            break
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if kill_at is None and os.path.exists(os.path.join(here, "stop")):
            try:
                with open(os.path.join(here, "stop")) as f:
                    grace = float(f.read().strip() or 10)
            except (OSError, ValueError):
                grace = 10.0
            os.killpg(pid, signal.SIGTERM)
            kill_at = time.monotonic() + grace
        elif kill_at is not None and time.monotonic() > kill_at:
            os.killpg(pid, signal.SIGKILL)
            kill_at = float("inf")
        time.sleep(POLL_S)
    if said is None:
        kill_others()
    killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = 128 + killed if killed else os.WEXITSTATUS(status)
    oom = killed == signal.SIGKILL and oom_kills() > before
    try:   # which of ./outputs and ./logs there are: the host asks Docker for those only
        with open(os.path.join(here, "telemetry", "workdir")) as f:
            workdir = f.read().strip()
        present = [d for d in ("outputs", "logs") if os.path.isdir(os.path.join(workdir, d))]
    except OSError:
        present = None
    write_atomic(os.path.join(here, "exit.json"), json.dumps(
        {"code": code, "signal": killed, "oom": oom, "present": present}))
    if said is not None:
        os.waitpid(pid, 0)


def take(folder, request_file):
    """The posted request, taken (renamed into its run's folder), or None: none posted, or
    the host withdrew it first."""
    try:
        with open(request_file) as f:
            request = json.load(f)
        os.rename(request_file, os.path.join(folder, request["run"], "request.json"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return request


def serve(folder, idle_s):
    if HOST["on"]:
        try:    # PR_SET_CHILD_SUBREAPER: a run's orphans become this worker's, to be killed
            import ctypes
            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    base_env = dict(os.environ)
    baseline = set(os.listdir("/tmp"))
    preload(folder)
    import gc
    import weakref
    for thing in gc.get_objects():
        # The imports' own exit-time finalizers (torch unregisters 144 operator libraries:
        # 0.1-0.6 s) are the worker's: a run's process neither needs nor may run them.
        if isinstance(thing, weakref.finalize):
            thing.atexit = False
    gc.collect()
    gc.freeze()     # the children's collections leave the worker's objects (and pages) alone
    write_atomic(os.path.join(folder, "ready"), str(os.getpid()))
    ready = os.path.join(folder, "ready")
    request_file = os.path.join(folder, "request.json")
    claim = os.path.join(folder, "claim")
    idle_since = time.monotonic()
    while True:
        request = take(folder, request_file)
        if request is not None:
            tidy(folder, request["run"], baseline)
            before = oom_kills()
            sys.stdout.flush()
            sys.stderr.flush()
            done_r, done_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(done_r)
                os._exit(finish(folder, request, base_env, done_w))
            os.close(done_w)
            os.set_blocking(done_r, False)
            write_atomic(os.path.join(folder, request["run"], "started"), str(pid))
            supervise(folder, request["run"], pid, before, done_r)
            os.close(done_r)
            reap()
            idle_since = time.monotonic()
        elif not os.path.exists(ready):
            return 0            # the host removed the folder: the workspace is gone
        elif time.monotonic() - idle_since > idle_s:
            try:
                fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:   # lent just now; a claim never followed up goes stale
                try:
                    if time.time() - os.stat(claim).st_mtime > idle_s:
                        os.remove(claim)
                except OSError:
                    pass
                idle_since = time.monotonic()
                continue
            os.write(fd, b"closing")
            os.close(fd)
            return 0
        time.sleep(POLL_S)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    HOST["on"] = "--host" in argv[2:]
    return serve(argv[0], float(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
