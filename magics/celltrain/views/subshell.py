"""Widget clicks while a cell waits: a kernel subshell that handles the widgets' messages."""
from __future__ import annotations

from concurrent.futures import Future

_subshell: list[str] = []     # this kernel's subshell for widget messages, made once


def kernel_subshell() -> str | None:
    """A kernel subshell (ipykernel 7) that handles the widget's clicks; None without one.

    A cell that waits for a run (``%%train``, ``w.wait()``) blocks the kernel's main shell, and
    widget clicks are messages the main shell would only handle after the cell.  A subshell is
    a second shell thread; the kernel routes a comm's messages to the subshell the comm names,
    so Cancel and the chart toggles work while a cell waits.
    """
    if _subshell:
        return _subshell[0]
    try:
        from IPython import get_ipython
        kernel = get_ipython().kernel
        channel = kernel.shell_channel_thread
        create = channel.manager._create_subshell
    except AttributeError:
        return None
    if channel is None:
        return None
    made: Future = Future()

    def make():          # must run on the shell channel thread
        try:
            made.set_result(create())
        except BaseException as e:
            made.set_exception(e)
    channel.io_loop.add_callback(make)
    try:
        _subshell.append(made.result(timeout=10))
    except Exception:
        return None
    return _subshell[0]


def route_to_subshell(widgets) -> bool:
    """Have the kernel hand these widgets' messages to the subshell (where there is one)."""
    subshell = kernel_subshell()
    if subshell is None:
        return False
    for widget in widgets:
        comm = getattr(widget, "comm", None)
        if comm is not None and hasattr(comm, "_reply_subshell_for"):
            comm._reply_subshell_for = lambda data, default, _id=subshell: _id
    return True
