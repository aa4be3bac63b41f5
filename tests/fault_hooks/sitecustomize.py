"""Faults and holds for tests/test_faults_docker.py (and the warm tests), in the supervisor processes it spawns.

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


def _hold_before(method, variable, others=False):
    """Make the Docker target's ``method`` (and the local and Ray targets', with ``others``)
    wait for the file named by ``variable``, if set."""
    path = os.environ.get(variable)
    if not path:
        return
    from celltrain.targets.docker.target import DockerTarget
    from celltrain.targets.local import LocalTarget
    from celltrain.targets.ray.target import RayTarget      # imports no Ray
    for cls in (DockerTarget, LocalTarget, RayTarget) if others else (DockerTarget,):
        original = getattr(cls, method)

        def held(self, *args, _original=original, **kwargs):
            _hold(path)
            return _original(self, *args, **kwargs)
        setattr(cls, method, held)


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
    _hold_before("start", "CELLTRAIN_TEST_HOLD_START")        # the run stays Starting
    _hold_before("collect", "CELLTRAIN_TEST_HOLD_COLLECT")    # the run stays Finalizing
    _hold_before("launch", "CELLTRAIN_TEST_HOLD_LAUNCH", True)  # started (claimed), not launched
    if env.get("CELLTRAIN_TEST_FAIL_WATCH"):
        _fail_once_running()


def _fail_once_running():
    """A bug in the supervisor's own path while the run runs: the first state check after the
    script said "ready" raises (once: the supervisor's clean-up may check again)."""
    from celltrain.targets.docker.target import DockerTarget as DockerBackend
    from celltrain.targets.local import LocalTarget as LocalBackend
    for cls in (DockerBackend, LocalBackend):
        def failing(self, handle, _is_running=cls.is_running):
            log = self.run_dir / "output.log"
            if not getattr(self, "_fault_done", False) and log.exists() \
                    and "ready" in log.read_text(errors="replace"):
                self._fault_done = True
                raise RuntimeError("the state check failed (fault injected by the test)")
            return _is_running(self, handle)
        cls.is_running = failing


_install()
