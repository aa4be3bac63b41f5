"""What ``log()`` and the rest of the logging API are given, checked inside the run's process:
a value that is not a number is refused right there, with the call named, rather than breaking
the run later on the host.  Standard library only, Python 3.8."""
import math
import operator

from .wire import NO_STEP, STEP_MAX


def short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _call(what, name, value, step):
    return "%s(%s, %s%s)" % (what, short(name), short(value),
                             "" if step is None else ", step=%s" % short(step))


def _a(value):
    kind = type(value).__name__
    return ("an " if kind[:1].lower() in "aeiou" else "a ") + kind


def check_name(name, call):
    """The metric/table name as a str, or TypeError/ValueError naming it."""
    if not isinstance(name, str):
        raise TypeError("%s: the name must be a str such as 'loss', not %s" % (
            call, "None" if name is None else _a(name)))
    if not name:
        raise ValueError("%s: the name must not be empty" % call)
    return str(name)


def check_step(step, call):
    """The step as an int (None stays None: the next step), or TypeError/ValueError."""
    if step is None:
        return None
    if isinstance(step, (str, bytes, float)) or not hasattr(type(step), "__index__"):
        raise TypeError("%s: the step must be an int (or None for the next step), not %s%s" % (
            call, _a(step), "; pass int(step)" if isinstance(step, float) else ""))
    step = operator.index(step)
    if not NO_STEP < step <= STEP_MAX:
        raise ValueError("%s: the step %d does not fit in 64 bits (from -2**63+1 to 2**63-1)" % (
            call, step))
    return step


def check_value(value, call, name="name"):
    """The value as a float: ints, numpy scalars and 0-d tensors convert; the rest is refused."""
    kind = _a(value)
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s; convert it yourself, e.g. float(...), if it holds "
                        "one" % (call, kind))
    if value is None:
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not None" % call)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s; log a list with log_list(%r, values)" % (
                            call, kind, name))
    shape = getattr(value, "shape", ())
    if getattr(value, "ndim", 0) != 0:
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s of shape %s; log one element (value.item()), or "
                        "all of them with log_list(%r, values.tolist())" % (
                            call, kind, tuple(shape), name))
    try:
        return float(value)
    except OverflowError:
        raise ValueError("%s: the value is too large for a float (at most about 1.8e308)"
                         % call) from None
    except (TypeError, ValueError):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s" % (call, kind)) from None


def checked_point(name, value, step):
    """``log()``'s slow path: convert what is unambiguous, refuse the rest naming the call."""
    call = _call("log", name, value, step)
    name = check_name(name, call)
    return name, check_value(value, call, name), check_step(step, call)


def jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)


def progress_value(value):
    value = jsonable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
