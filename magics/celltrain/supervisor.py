"""The supervisor: one detached process per run that carries it through its states.

``python -m celltrain.supervisor WORKSPACE RUN_ID``.  It holds ``supervisor.lock`` for its whole
life (so nobody starts a second one), picks up wherever the run's recorded state says, and turns
every failure into a Failed state with a reason a person understands.  If it dies, the next
process that opens the workspace starts a new one, which re-attaches or finalizes.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from . import safefiles, states
from .errors import CelltrainError, ImageBuildError, TargetUnavailable
from .locks import take_lock
from .runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from .spec import RunSpec
from .store import Store
from .sysmetrics import DEFAULT_INTERVAL_S, Sampler, interval_s
from .targets import Handle, PrepareStopped, target_class
from .runtime.wire import FAILURE_FILE, TELEMETRY_DIR
from .telemetry import TelemetryWatch

NOTICE = "notice: "

POLL_S = 0.05
STATE_POLL_S = 0.5
DEFAULT_GRACE_S = 10.0
LOCK_TRIES_S = 1.0
STDERR_TAIL_LINES = 15
REASON_CAP = 16 * 1024   # bytes of failure.txt or of stderr's tail a reason is made from


class Canceled(Exception):
    pass


def make_target(store: Store, run: dict, notify):
    """The run's compute target, built from the stored spec (not yet connected)."""
    spec = RunSpec.from_record(run)
    return target_class(run["target"])(store, run, spec, notify, spec.target_settings)


class Supervisor:
    def __init__(self, workspace: str | Path, run_id: str, clock=time.monotonic):
        self.store = Store(workspace)
        self.run_id = run_id
        self.run_dir = self.store.run_dir(run_id)
        self.clock = clock
        self.telemetry = TelemetryWatch(self.store, run_id, clock)

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    def notify(self, message: str) -> None:
        """A note for the person watching.  Before the run starts ("pulling ...", "image
        cached: ...") it goes into the build log as a "# " note, which the views show as the
        state's detail in their status line; a "notice: ..." (the run went on another way,
        such as on the offline base image) is said once, in the run's warnings; later notes
        go into the run's output.  Notes ahead of every run's output would be noise there."""
        self.log(message)
        if message.startswith(NOTICE):
            self.store.add_warning(self.run_id, "notice", message[len(NOTICE):])
            return
        status = self.store.get_run(self.run_id)["status"]
        # "pulling ...", "image cached: ...": a "# " note in the build log, which the views
        # show as the Preparing state's detail (the status line), not in the run's output.
        before = status in (states.QUEUED, states.PREPARING, states.STARTING)
        with open(self.run_dir / (BUILD_LOG if before else OUTPUT_LOG), "a") as out:
            out.write(f"# {message}\n" if before else f"[celltrain] {message}\n")

    def status(self, status: str, detail: str | None = None, **fields) -> None:
        self.log(f"{status}{': ' + detail if detail else ''}")
        self.store.set_status(self.run_id, status, detail, **fields)

    def cancel_requested(self) -> bool:
        return bool(self.store.get_run(self.run_id)["cancel_requested"])

    def ingest(self, final: bool = False) -> None:
        """Move new telemetry into the store; stats, not queries, when nothing was logged.

        ``final``: the run has ended, so a frame cut short at the end is skipped, not waited
        for.  Nothing the run wrote may stop the supervisor: what ingestion cannot take becomes
        a warning on the run (telemetry.ingest), and anything else is noted there too.
        """
        try:
            self.telemetry.ingest(final=final)
        except Exception as e:  # noqa: BLE001  (e.g. the database locked for too long)
            self.log("telemetry ingestion failed: " + traceback.format_exc())
            self.telemetry.forget()
            try:
                self.store.add_warning(self.run_id, "ingest-error",
                                       f"telemetry ingestion failed ({type(e).__name__}: "
                                       f"{str(e)[:200]}); it is retried as the run logs more")
            except Exception:  # noqa: BLE001
                pass

    # -- the life of a run ------------------------------------------------------------------------
    def main(self) -> int:
        lock_file = open(self.run_dir / "supervisor.lock", "a")
        if not take_lock(lock_file, LOCK_TRIES_S):
            return 0  # another supervisor has this run
        run = self.store.get_run(self.run_id)
        if run is None or states.is_terminal(run["status"]):
            return 0
        self.target = self.handle = None
        try:
            self.target = make_target(self.store, run, notify=self.notify)
            self.carry(run)
        except Canceled:
            self.status(states.CANCELED, reason="canceled before the run started",
                        ended=time.time())
        except PrepareStopped:
            self.status(states.CANCELED, reason="canceled while preparing the image "
                        "(the build was stopped; nothing was committed)", ended=time.time())
        except ImageBuildError as e:
            self.status(states.FAILED, "image build failed", reason=str(e), ended=time.time())
        except Exception as e:  # every failure becomes a state with a reason
            self.log(traceback.format_exc())
            unreachable = self.target is not None and self.target.unreachable(e)
            fate, fields = self.abandon()
            if unreachable:
                self.status(states.FAILED, f"{self.target.unreachable_name} unreachable",
                            ended=time.time(), **fields, reason=f"{self.explain(e)}{fate}")
            else:
                self.status(states.FAILED, "supervisor error", ended=time.time(), **fields,
                            reason=f"celltrain could not carry the run: {self.explain(e)}"
                                   f"{fate}")
        return 0

    def explain(self, e: BaseException) -> str:
        """An exception as words for a reason: the target's own, else celltrain's or its type."""
        said = self.target.explain(e) if self.target is not None else None
        if said:
            return said
        text = str(e).strip() or type(e).__name__
        return text if isinstance(e, CelltrainError) else f"{type(e).__name__}: {text}"

    def abandon(self) -> tuple[str, dict]:
        """After a failure: stop and remove what the run started, keeping what it made.

        Returns what became of the container (or process), as the end of a reason, and the
        exit code where there is one.  What cannot be removed now (the engine is down) is
        marked, and the next workspace open with the engine up removes it.
        """
        target, handle = self.target, self.handle
        if target is None:
            return "", {}
        what = target.noun
        fields = {}
        try:
            if handle is None:   # nothing started; a build may have been left by a dead engine
                target.clean_prepare()
                return "", {}
            if not target.exists(handle):
                return "", {}
            if target.is_running(handle):
                target.stop(handle, DEFAULT_GRACE_S)
            exit_code = target.result(handle).exit_code
            if exit_code is not None:
                fields["exit_code"] = exit_code
            try:
                target.collect(handle)   # its checkpoints, logs and output are kept
            except Exception:
                self.log("collecting outputs after the failure failed too:\n"
                         + traceback.format_exc())
            target.cleanup(handle)
            return f"; the run's {what} was stopped and removed", fields
        except Exception as e:
            self.log(f"stopping the {what} failed:\n" + traceback.format_exc())
            pending = target.leave_for_reconcile()
            if not pending:
                return f"; stopping the {what} failed too ({self.explain(e)})", fields
            if target.unreachable(e):
                return pending, fields
            return (f"; stopping its {what} failed too ({self.explain(e)}): it is removed "
                    "the next time the workspace is opened"), fields

    def engine_back(self, since: float) -> None:
        """Wait for a target's engine that stopped answering, or raise TargetUnavailable."""
        target = self.target
        name = target.unreachable_name
        wait = target.reach_wait_s()
        clock = time.strftime("%H:%M:%S", time.localtime(since))
        status = self.store.get_run(self.run_id)["status"]
        self.status(status, f"{name[0].upper()}{name[1:]} unreachable since {clock}; "
                            f"waiting up to {wait:g}s")
        self.notify(f"{name} is unreachable since {clock}; waiting for it")
        if not target.wait_until_reachable(wait - (time.time() - since)):
            raise TargetUnavailable(
                f"{name} stopped answering at {clock} and did not come back within "
                f"{wait:g}s (CELLTRAIN_ENGINE_WAIT): start it again")
        self.status(status, f"{name[0].upper()}{name[1:]} answers again")
        self.notify(f"{name} answers again")

    def engine_call(self, fn, *args):
        """``fn(*args)``, once more after the engine comes back if it stopped answering."""
        try:
            return fn(*args)
        except Exception as e:
            if not self.target.unreachable(e):
                raise
            self.engine_back(time.time())
            return fn(*args)

    def connect(self) -> None:
        """Connect to the run's target; waits for an engine that is down right now."""
        try:
            self.target.connect()
        except TargetUnavailable:
            self.engine_back(time.time())
            self.target.connect()

    def carry(self, run: dict) -> None:
        self.connect()
        target = self.target
        handle = self.handle = Handle.from_record(run)
        resumed = handle is not None
        if handle is None:
            if self.cancel_requested():
                raise Canceled
            if run["status"] != states.PREPARING:
                self.status(states.PREPARING, "preparing the image")
            prepared = self.engine_call(target.prepare, self.stop_requested)
            detail = "image built" if prepared.built else "image cached"
            if self.cancel_requested():
                raise Canceled
            self.status(states.STARTING, f"{detail}: {prepared.image}",
                        image=prepared.image, image_digest=prepared.image_digest)
            handle = self.handle = self.engine_call(target.start, prepared)
            self.store.update_run(self.run_id, container_id=handle.legacy_id(),
                                  handle=handle.to_dict())
            if self.cancel_requested():   # created, never started: nothing ran
                target.cleanup(handle)
                raise Canceled
            handle = self.launch(target, handle)
            self.status(states.RUNNING, started=time.time())
        elif not self.engine_call(target.exists, handle):
            self.status(states.FAILED, f"{target.noun} vanished", ended=time.time(),
                        reason=f"the run's {target.noun} ({handle.short()}) no longer exists "
                               "(removed by hand, or by a prune?); its outputs are lost")
            return
        elif run["status"] in (states.STARTING,):
            if not target.is_running(handle):
                handle = self.launch(target, handle)
            self.status(states.RUNNING, started=time.time())
        sampler = self.start_sampler(target, handle)
        try:
            canceled, timed_out = self.watch(target, handle, resumed)
        finally:
            sampler.stop()
        self.finalize(target, handle, canceled, timed_out)

    def start_sampler(self, target, handle: Handle) -> Sampler:
        """CPU, memory and GPU samples of the run while it runs (``celltrain.sysmetrics``)."""
        try:
            every = interval_s()
        except ValueError as e:
            self.store.add_warning(self.run_id, "sys-metrics",
                                   f"{e}; sampled every {DEFAULT_INTERVAL_S:g}s")
            every = DEFAULT_INTERVAL_S
        return Sampler(self.store, self.run_id, target, handle, every, self.log).start()

    def launch(self, target, handle: Handle) -> Handle:
        """Set the run going; a target that had to start it another way (a warm worker that
        was gone: a cold container) gives a new handle, stored in place of the first."""
        new = target.launch(handle)
        if new is not None:
            handle = self.handle = new
            self.store.update_run(self.run_id, container_id=handle.legacy_id(),
                                  handle=handle.to_dict())
        return handle

    def stop_requested(self) -> float | None:
        """For a pull or build: the cancel's grace once a cancel was asked for, else None."""
        run = self.store.get_run(self.run_id)
        if not run["cancel_requested"]:
            return None
        return run["options"].get("cancel_grace", DEFAULT_GRACE_S)

    def watch(self, target, handle: Handle, resumed: bool) -> tuple[bool, bool]:
        run = self.store.get_run(self.run_id)
        timeout = self.target.spec.resources.timeout
        started = run["started"] or time.time()
        deadline = None if timeout is None else self.clock() + timeout - (time.time() - started)
        pump = target.stream_output(handle, resumed)
        canceled = timed_out = False
        next_state_check = 0.0
        while True:
            self.ingest()
            now = self.clock()
            output_ended = pump is not None and not pump.is_alive()
            if now >= next_state_check or output_ended:
                next_state_check = now + STATE_POLL_S
                try:
                    if not target.is_running(handle):
                        break
                    if output_ended:   # the engine restarted under us, quicker than a poll
                        pump = target.stream_output(handle, True)
                    if not canceled and self.cancel_requested():
                        self.log("cancel requested: SIGTERM, then SIGKILL after the grace "
                                 "period")
                        target.stop(handle, self.store.get_run(self.run_id)["options"]
                                     .get("cancel_grace", DEFAULT_GRACE_S))
                        canceled = True
                    elif deadline is not None and now > deadline and not timed_out:
                        self.log(f"timed out after {timeout}s")
                        target.stop(handle, DEFAULT_GRACE_S)
                        timed_out = True
                except Exception as e:
                    if not target.unreachable(e):
                        raise
                    self.engine_back(time.time())   # then follow the log anew
                    if pump is not None:
                        pump.join(timeout=5)
                    pump = target.stream_output(handle, True)
                    continue
            if pump is not None and pump.is_alive():
                pump.join(POLL_S)       # wakes the moment the output ends (the run exited)
            else:
                time.sleep(POLL_S)
        if pump is not None:
            pump.join(timeout=5)
        return canceled, timed_out

    def finalize(self, target, handle: Handle, canceled: bool, timed_out: bool) -> None:
        self.status(states.FINALIZING, "copying ./outputs and ./logs back")
        result = self.engine_call(target.result, handle)
        exit_code, oom = result.exit_code, result.oom
        try:
            target.collect(handle)
        finally:
            self.ingest(final=True)
        run = self.store.get_run(self.run_id)
        ended = time.time()
        fields = dict(exit_code=exit_code, ended=ended)
        if canceled or (run["cancel_requested"] and exit_code != 0):
            # a sweep's early termination says why it stopped the trial (cancel_reason)
            self.status(states.CANCELED, reason=run["options"].get("cancel_reason")
                        or "canceled by the user", **fields)
        elif timed_out:
            timeout = target.spec.resources.timeout
            self.status(states.FAILED, reason=f"timed out after {timeout:g}s (timeout="
                        f"{timeout:g}); the run was stopped", **fields)
        elif oom:
            self.status(states.FAILED, reason=(
                f"out of memory: the {target.noun} was OOM-killed (exit code {exit_code}); "
                f"raise memory= (now {target.spec.resources.memory or 'no limit'}) or lower "
                "the batch size"), **fields)
        elif exit_code == 0:
            self.status(states.COMPLETED, **fields)
        else:
            self.status(states.FAILED, reason=self.failure_reason(exit_code), **fields)
        try:
            target.cleanup(handle)
        except Exception as e:   # the run's state stands; the container is removed later
            self.log(f"removing the {target.noun} failed: {self.explain(e)}")
            target.leave_for_reconcile()

    def failure_reason(self, exit_code: int | None) -> str:
        """The runner's own explanation (telemetry/failure.txt), else the exit code and the
        tail of stderr.  Both are read without following links and capped: the container
        wrote them, and a link to a host file must not become the reason."""
        explained = f"{TELEMETRY_DIR}/{FAILURE_FILE}"
        try:
            text = safefiles.read_bytes(self.run_dir, explained, REASON_CAP)
            if text.strip():
                return text.decode(errors="replace").strip()
        except FileNotFoundError:
            pass
        except (safefiles.UnsafePath, NotADirectoryError) as e:
            self.store.add_warning(self.run_id, "unsafe-file",
                                   f"{explained} was not read: {e.strerror}")
        head = f"exit code {exit_code}"
        if exit_code == 137:
            head += " (killed by SIGKILL)"
        elif exit_code == 143:
            head += " (terminated by SIGTERM)"
        stderr = safefiles.read_text(self.run_dir, STDERR_LOG, REASON_CAP, tail=True,
                                     default="")
        lines = stderr.rstrip().splitlines()
        if lines:
            return head + "; last lines of stderr:\n" + "\n".join(lines[-STDERR_TAIL_LINES:])
        return head + " (nothing on stderr)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m celltrain.supervisor WORKSPACE RUN_ID", file=sys.stderr)
        return 2
    return Supervisor(argv[0], argv[1]).main()


if __name__ == "__main__":
    sys.exit(main())
