"""Faults and holds for tests/test_faults_docker.py, in the supervisor processes it spawns.

A test puts this folder on PYTHONPATH and sets one of the variables below; a supervisor then
waits at a chosen point until a file exists (so a test can act while a run is in a given state),
or meets a real exception where an ordinary bug would raise one.  Other processes are untouched.
"""
import os
import time


def _hold(path):
    open(path + ".reached", "w").close()
    while not os.path.exists(path):
        time.sleep(0.05)


def _install():
    try:
        with open("/proc/self/cmdline", "rb") as f:
            if b"celltrain.supervisor" not in f.read():
                return
    except OSError:
        return
    env = os.environ
    if env.get("CELLTRAIN_TEST_HOLD_SUPERVISOR"):
        _hold(env["CELLTRAIN_TEST_HOLD_SUPERVISOR"])      # the run stays Queued
    if env.get("CELLTRAIN_TEST_HOLD_START"):
        from celltrain.backend_docker import DockerBackend
        start = DockerBackend.start

        def held_start(self, image):                      # the run stays Starting
            _hold(env["CELLTRAIN_TEST_HOLD_START"])
            return start(self, image)
        DockerBackend.start = held_start
    if env.get("CELLTRAIN_TEST_HOLD_COLLECT"):
        from celltrain.backend_docker import DockerBackend
        collect = DockerBackend.collect

        def held_collect(self, handle):                   # the run stays Finalizing
            _hold(env["CELLTRAIN_TEST_HOLD_COLLECT"])
            return collect(self, handle)
        DockerBackend.collect = held_collect
    if env.get("CELLTRAIN_TEST_FAIL_METRICS"):
        # A bug in the supervisor's own path once the run has logged.  Not Store.add_metrics
        # any more: ingestion turns its errors into a run warning and goes on, as it should.
        # (Not Supervisor itself either: python -m runs it as __main__, another module.)
        from celltrain.backend_docker import DockerBackend
        from celltrain.backend_local import LocalBackend
        for backend in (DockerBackend, LocalBackend):
            _fail_once_logged(backend)


def _fail_once_logged(backend):
    """``is_running`` raises once, at the first poll after the run's first metric is stored
    (once: stopping the run after the failure still works)."""
    is_running = backend.is_running
    failed = []

    def failing_is_running(self, handle):
        if not failed and self.store.last_steps(self.run["id"]):
            failed.append(True)
            raise RuntimeError("the supervisor failed after storing metrics (fault injected "
                               "by the test)")
        return is_running(self, handle)
    backend.is_running = failing_is_running


_install()
