"""Stop signals: how a run ends cleanly when it is asked to stop (docs/harness.md, "Signals").

SIGTERM, SIGINT (Ctrl-C), SIGUSR1 and the job scheduler's preemption signal set a flag; the loop checkpoints
after the current update and ends the run with status ``preempted`` (summary.json names the signal). run.py
then exits 0, or 130 after SIGINT (the shell's convention for Ctrl-C, which also stops a sweep). A second
SIGINT interrupts at once (Python's KeyboardInterrupt): the last checkpoint stays resumable.

During the final evaluation (``task.finalize``: checkpoint averaging, beam search, BLEU, which may take long)
the flag alone would go unseen, so there a signal raises ``Interrupted`` at once: the run ends ``preempted``
with last.pt at its final update, and a resume runs the final evaluation again.

Under submitit (Hydra's submitit launchers) the preemption signal is SIGUSR2 (or $SUBMITIT_PREEMPT_SIGNAL):
SLURM sends it ``signal_delay_s`` before the time limit or on preemption, and submitit's handler requeues the
job. That handler is kept and called by ``hand_over`` once the checkpoint is written, so the requeued job
resumes from the very update the signal arrived at (submitit then exits the process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from experiments.task import first_line

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A stop signal arrived while the loop could not wait for the end of an update (the final evaluation)."""


class StopSignal:
    def __init__(self):
        self.received: int | None = None
        self.previous = {}
        self.preempt = _preempt_signal()
        self._raise = False
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {sig: signal.signal(sig, self._handle)
                             for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, self.preempt)}

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.received != self.preempt:  # SLURM's SIGTERM may follow the preemption signal: keep the latter
            self.received = signum
        if self._raise:
            self._raise = False
            raise Interrupted(signal.Signals(signum).name)

    @contextlib.contextmanager
    def interrupting(self):
        """Inside: a stop signal (or one that came before) raises Interrupted instead of only setting the flag."""
        if self.received is not None:
            raise Interrupted(self.name)
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """Call the handler that was installed before ours for the preemption signal (submitit's requeue, which
        exits the process). A handler that cannot requeue raises (submitit: timed out too many times): the run
        stays resumable by hand, so that is logged, not raised."""
        handler = self.previous.get(self.received) if self.received == self.preempt else None
        if callable(handler) and handler is not signal.default_int_handler:
            try:
                handler(self.received, None)
            except Exception as e:  # noqa: BLE001 - anything but SystemExit: the requeue did not happen
                log.warning(f"the job was not requeued ({first_line(e)}); rerun it to resume")


def _preempt_signal() -> int:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's variable and default
    return getattr(signal, "SIG" + name.upper().removeprefix("SIG"), signal.SIGUSR2)
