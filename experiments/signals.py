"""Stop requests: SIGTERM, SIGUSR2 and SIGINT become a flag the training loop checks between steps.

The loop writes a checkpoint, then hands the signals back to whoever handled them before
(submitit requeues the job; SIGTERM ends the process; Ctrl-C exits 130), see docs/DESIGN.md,
"Signals, resume and exit codes".
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Turns SIGTERM/SIGUSR2/SIGINT into a flag the loop checks between steps.

    After the checkpoint is written, `hand_over` restores the previous handlers and raises the
    signals again, so submitit's own handler requeues the job, or the process ends as it would
    have. Every signal that arrived is kept, in order: Python runs the handlers of signals that
    are pending together in signal-number order, so TERM (15) and USR2 (12) sent back to back
    (submitit's own preemption) may both be seen before the loop looks, and the USR2 that
    requeues must not be lost behind the TERM that submitit ignores.

    A signal the process was started with ignored (`nohup`, a shell's background job ignoring
    SIGINT) stays ignored: whoever launched the run asked for it not to stop on that signal.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum not in self.received:
            self.received.append(signum)

    def __call__(self) -> bool:
        return bool(self.received)

    def names(self) -> str:
        return ", ".join(signal.Signals(n).name for n in self.received)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def hand_over(self) -> None:
        """Re-raise the signals to the previous handlers, which normally end the process.

        If they all return instead (submitit's SIGTERM handler waits for the USR2 that
        follows), the signals were not meant to end the process: training goes on, watching
        for the next one.
        """
        received, self.received = self.received, []
        self.__exit__()
        for signum in received:
            signal.raise_signal(signum)
        self.__enter__()
