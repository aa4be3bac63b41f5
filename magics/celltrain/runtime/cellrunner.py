"""The entry script of a ``%%train`` run: load the cell's bundle, run the cell, send results back.

It is copied into the run's source folder as ``celltrain_cell.py`` and runs inside the container,
so it is standard library plus cloudpickle (mounted from the host, never installed), and stays
compatible with Python 3.8.  Every way it can fail before the cell runs (a Python the bundle's
bytecode cannot run on, a missing package, a variable that will not load) and every exception in
the cell ends in ``$CELLTRAIN_TELEMETRY_DIR/failure.txt``, which becomes the run's reason; the
cell's traceback names the notebook's cells and their own line numbers.
"""
import builtins
import importlib
import json
import os
import pickle
import sys
import time

from celltrain.runtime.wire import (FAILURE_FILE, RANK_ENVS, RESULTS_FILE, TELEMETRY_ENV,
                                    rank_from)

BUNDLE_DIR = ".celltrain-cell"
META_FILE = "cell.json"
NAMESPACE_FILE = "namespace.pkl"
HERE = os.path.dirname(os.path.abspath(__file__))


class Failure(Exception):
    """A failure with a reason a person understands: written to failure.txt, exit code 1."""


def notes_folder(failure=False):
    """Where this process leaves its reason and results: the telemetry folder, or for a rank of
    a distributed cell its ``rank-<r>/`` (rank 0's results stay where they come back from; every
    rank's reason goes to its folder, and the rank wrapper makes the first one the run's)."""
    folder = os.environ.get(TELEMETRY_ENV)
    rank = rank_from(os.environ)
    if folder and (rank or (failure and any(os.environ.get(k) for k in RANK_ENVS))):
        folder = os.path.join(folder, "rank-%d" % rank)
        os.makedirs(folder, exist_ok=True)
    return folder


def fail(reason, echo=None):
    """Explain the failure in failure.txt (the run's reason); ``echo`` goes to stderr."""
    text = reason.rstrip() + "\n"
    sys.stderr.write(text if echo is None else echo.rstrip() + "\n")
    sys.stderr.flush()
    folder = notes_folder(failure=True)
    if folder:
        try:
            with open(os.path.join(folder, FAILURE_FILE), "w") as f:
                f.write(text)
        except OSError:
            pass
    return 1


def check_python(meta):
    want = tuple(meta["python"])
    have = tuple(sys.version_info[:2])
    if meta.get("code_by_value") and have != want:
        raise Failure(
            "the image runs Python %d.%d but the notebook's kernel runs %d.%d: functions and "
            "classes defined in the notebook travel as Python %d.%d bytecode, which only the "
            "same Python version can run. Use an image with Python %d.%d (--image), or run "
            "the kernel on Python %d.%d." % (have + want + want + want + have))


def install_sources(meta):
    """Let tracebacks show the source of the cell and of notebook functions."""
    import linecache
    for filename, text in meta.get("sources", {}).items():
        lines = text.splitlines(True)
        linecache.cache[filename] = (len(text), None, lines, filename)


def hint_for_missing(meta, error):
    name = (getattr(error, "name", None) or "").split(".")[0]
    dist = meta.get("module_dists", {}).get(name)
    if not name:
        return ""
    if dist:
        version = meta.get("packages", {}).get(dist)
        pin = "%s==%s" % (dist, version) if version else dist
        return " The image lacks the package %r: add --pip %s (or use an image that has it)." % (
            dist, pin)
    return " The image lacks the module %r: add it with --pip, or use an image that has it." % (
        name)


def build_namespace(meta):
    """The cell's globals: imports, notebook variables, params, and log/progress/Run."""
    from celltrain.runtime.context import Run, get_context, log, progress
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for statement in meta["imports"]:
        try:
            exec(statement, namespace)
        except ImportError as e:
            raise Failure("the cell needs `%s`, which fails in the image: %s: %s.%s" % (
                statement, type(e).__name__, e, hint_for_missing(meta, e)))
    loaded = {}
    path = os.path.join(HERE, BUNDLE_DIR, NAMESPACE_FILE)
    if meta["variables"]:
        try:
            import cloudpickle  # noqa: F401  (the pickles refer to it)
        except ImportError:
            raise Failure("cloudpickle is not importable in the image: celltrain mounts the "
                          "host's copy under /celltrain-lib; is PYTHONPATH overridden?")
        with open(path, "rb") as f:
            unpickler = pickle.Unpickler(f)
            for name in meta["variables"]:
                try:
                    key, value = unpickler.load()
                except ImportError as e:
                    raise Failure("could not load the notebook variable %r in the run: %s: %s.%s"
                                  % (name, type(e).__name__, e, hint_for_missing(meta, e)))
                except Exception as e:
                    raise Failure("could not load the notebook variable %r in the run: %s: %s"
                                  % (name, type(e).__name__, e))
                loaded[key] = value
    # Notebook functions arrive sharing one globals dict (cloudpickle keeps that per pickler).
    # Running the cell in that same dict lets them see what the cell assigns, as in the notebook.
    for value in loaded.values():
        shared = _notebook_globals(value)
        if shared is not None:
            shared.update(namespace)
            namespace = shared
            break
    namespace.update(loaded)
    run = get_context()
    namespace.update(run.params)
    for name, value in (("log", log), ("progress", progress), ("Run", Run)):
        namespace.setdefault(name, value)
    return namespace


def _notebook_globals(value):
    import types
    candidates = [value]
    if isinstance(value, type):
        candidates = [v for v in vars(value).values() if isinstance(v, types.FunctionType)]
    for item in candidates:
        if isinstance(item, types.FunctionType) and item.__globals__.get("__name__") == "__main__":
            return item.__globals__
    return None


def patch_tqdm():
    """A tqdm bar in the cell also reports to the run, like ``progress`` (outermost bar only)."""
    # The cell's own tqdm, if the image has one: never a dependency of the runtime, so it is
    # looked up by name, and a missing one is no error.
    try:
        std = importlib.import_module("tqdm.std")
    except ImportError:
        return
    from celltrain.runtime.context import get_context
    run = get_context()
    cls = std.tqdm
    if getattr(cls, "_celltrain_patched", False):
        return
    original_update, original_close = cls.update, cls.close
    last = [0.0]

    def report(bar, done=False):
        if getattr(bar, "disable", False) or abs(getattr(bar, "pos", 0) or 0) != 0:
            return
        now = time.time()
        if not done and now - last[0] < 0.1:
            return
        last[0] = now
        try:
            info = bar.format_dict
            rate = info.get("rate") or (info["n"] / info["elapsed"] if info.get("elapsed")
                                        and info.get("n") else None)
            total = info.get("total")
            eta = (total - info["n"]) / rate if rate and total is not None else None
            run.set_progress(n=info["n"], total=total, desc=info.get("prefix") or None,
                             unit=info.get("unit") or "it", rate=rate,
                             elapsed=info.get("elapsed"), eta=eta, done=done)
        except Exception:
            pass  # progress reporting must never break training

    def update(self, n=1):
        result = original_update(self, n)
        report(self)
        return result

    def close(self):
        if not getattr(self, "disable", True):
            report(self, done=True)
        return original_close(self)

    cls.update, cls.close, cls._celltrain_patched = update, close, True


def format_failure(meta, error):
    """The cell's traceback without this script's frames, naming cells as the notebook does."""
    import traceback
    install_sources(meta)
    exc = traceback.TracebackException(type(error), error, error.__traceback__)
    frames = [f for f in exc.stack if os.path.abspath(f.filename) != os.path.abspath(__file__)]
    exc.stack = traceback.StackSummary.from_list(frames)
    text = "".join(exc.format())
    for filename, label in meta.get("labels", {}).items():
        text = text.replace('File "%s", line' % filename, "%s, line" % label)
    summary = "".join(traceback.format_exception_only(type(error), error)).strip()
    where = ""
    for frame in reversed(frames):
        label = meta.get("labels", {}).get(frame.filename)
        if label:
            where = " (%s, line %s)" % (label, frame.lineno)
            break
    return "the cell raised %s%s\n%s" % (summary.splitlines()[0] if summary else
                                         type(error).__name__, where, text)


def to_cpu(value, depth=0):
    """Tensors and modules come back on the CPU, so a notebook without a GPU can use them."""
    torch = sys.modules.get("torch")
    if torch is None or depth > 3:
        return value
    if isinstance(value, torch.nn.Module):
        return value.cpu()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu() if value.device.type != "cpu" else value
    if isinstance(value, dict):
        return type(value)((k, to_cpu(v, depth + 1)) for k, v in value.items()) \
            if type(value) is dict else value
    if type(value) in (list, tuple):
        return type(value)(to_cpu(v, depth + 1) for v in value)
    return value


def _dumps(value):
    """Plain pickle when it can (no cloudpickle import for most results), else cloudpickle."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def save_results(meta, namespace, value, has_value):
    """``$CELLTRAIN_TELEMETRY_DIR/cell-results.pkl``: a header, each --out value, the value."""
    missing = [name for name in meta["out"] if name not in namespace]
    names = [name for name in meta["out"] if name in namespace]
    items = []
    for name in names:
        try:
            items.append((name, _dumps(to_cpu(namespace[name]))))
        except Exception as e:
            raise Failure("--out %s: the cell's %s (a %s) cannot be sent back: %s: %s. "
                          "Save it under ./outputs instead (torch.save, np.save), and load "
                          "it from the run's outputs folder." % (
                              name, name, type(namespace[name]).__name__,
                              type(e).__name__, e))
    if has_value:
        try:
            items.append(("value", _dumps(to_cpu(value))))
        except Exception:
            items.append(("repr", repr(value)))
    folder = notes_folder() or os.path.join("outputs", ".celltrain")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RESULTS_FILE), "wb") as f:
        pickle.dump({"out": names, "has_value": has_value}, f, protocol=4)
        for item in items:
            pickle.dump(item, f, protocol=pickle.HIGHEST_PROTOCOL)
    if missing:
        raise Failure("--out %s: the cell finished but did not define %s, so it cannot come "
                      "back to the notebook; assign %s in the cell, or drop it from --out" % (
                          " ".join(missing), ", ".join(missing), missing[0]))


def main():
    with open(os.path.join(HERE, BUNDLE_DIR, META_FILE)) as f:
        meta = json.load(f)
    try:
        check_python(meta)
        namespace = build_namespace(meta)
        if meta.get("tqdm"):
            patch_tqdm()
    except Failure as e:
        return fail(str(e))
    filename = meta["filename"]
    expression = meta.get("eval_source")
    value = None
    try:
        exec(compile(meta["exec_source"], filename, "exec"), namespace)
        if expression is not None:
            value = eval(compile(expression, filename, "eval"), namespace)
    except Exception as e:
        reason = format_failure(meta, e)
        return fail(reason, echo=reason.splitlines()[0] + " (the traceback is the run's reason)")
    try:
        save_results(meta, namespace, value, expression is not None and value is not None)
    except Failure as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)  # the notebook's own .py modules travel next to this script
    sys.exit(main())
