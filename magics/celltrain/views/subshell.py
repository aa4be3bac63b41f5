"""Widget clicks while a cell waits: a kernel subshell that handles the widgets' messages, and
a kernel status that stays Busy meanwhile.

The status: a kernel publishes busy/idle around every request, also around those its control
thread and its subshells handle while the main shell runs a cell: widget messages (celltrain's
clicks; JupyterLab 4.6 sends every widget message to a subshell of its own) and the
``create_subshell_request`` JupyterLab sends when the first widget appears.  JupyterLab takes
every status message as the kernel's, so after such an "idle" its status bar read Idle for
the rest of a ``%%train`` cell.  ``keep_status_busy`` follows each such "idle" with a "busy" of
the main shell's request, so the last status a front end reads is the main shell's.
"""
from __future__ import annotations

import threading
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


def keep_status_busy(kernel=None) -> bool:
    """While the kernel's main shell handles a request, an "idle" published for another one
    (a subshell's, the control thread's) is followed by a "busy" of the main shell's request.

    Front ends that end a request on its own "idle" still get it; only the kernel's status as a
    whole stays true.  Costs one more status message per such request.  Patches ipykernel's
    ``_publish_status`` (ipykernel 6 and 7) once per kernel; False where there is none.
    """
    if kernel is None:
        try:
            from IPython import get_ipython
            kernel = get_ipython().kernel
        except AttributeError:
            return False
    publish = getattr(kernel, "_publish_status", None)
    if publish is None or getattr(publish, "keeps_busy", False) or not hasattr(kernel,
                                                                             "get_parent"):
        return False
    shells = getattr(kernel, "shell_channel_thread", None)       # ipykernel 7; 6: main thread
    main = getattr(shells, "parent_thread", None) or threading.main_thread()
    lock = threading.Lock()
    running: list[dict] = []       # the main shell's requests being handled, innermost last

    def publish_status(status, channel, parent=None):
        with lock:               # one order on IOPub for the main shell's and the others' status
            publish(status, channel, parent)
            if channel == "shell" and threading.current_thread() is main:
                if status == "busy":
                    running.append(parent or kernel.get_parent("shell"))
                elif status == "idle" and running:
                    running.pop()
                    if running:      # a request handled inside another (a cell that polls)
                        publish("busy", "shell", running[-1])
            elif status == "idle" and running:
                publish("busy", "shell", running[-1])

    publish_status.keeps_busy = True
    kernel._publish_status = publish_status
    return True
