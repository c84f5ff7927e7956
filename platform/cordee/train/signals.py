"""Stop requests: a signal asks the trainer to finish its step, save a checkpoint and exit.

Slurm sends the signal of `sbatch --signal=USR1@120` to the job's steps a while before the time
limit (and SIGTERM at the limit, KillWait seconds before SIGKILL). The handler only records the
signal; the training loop reads `requested` between steps, agrees with the other ranks, saves a
complete checkpoint synchronously and exits with EXIT_STOPPED.

EXIT_STOPPED = 75: stopped by a signal after a complete checkpoint; resubmit or requeue the job
to resume. (75 is EX_TEMPFAIL of BSD's sysexits.h, "try again later"; the job scripts of
`cordee job render` read it as "the chain continues".)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable

from cordee.errors import CordeeError, InputError, shown

EXIT_STOPPED = 75
DEFAULT_STOP_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")
# Signals a scheduler or a user sends to ask for a clean stop; SIGKILL and SIGSTOP cannot be caught.
STOP_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGXCPU")


def parse_signal(name: str) -> signal.Signals:
    """'SIGUSR1' or 'USR1' (any case) -> signal.SIGUSR1; InputError for anything else."""
    if not isinstance(name, str):
        raise InputError(f"stop signal {shown(name)}: expected a name, one of {', '.join(STOP_SIGNALS)}")
    upper = name.upper()
    canonical = upper if upper.startswith("SIG") else f"SIG{upper}"
    if canonical not in STOP_SIGNALS:
        raise InputError(f"stop signal {shown(name)}: not one of {', '.join(STOP_SIGNALS)}")
    return signal.Signals[canonical]


class StopRequest:
    """Records the first stop signal received. Use from the main thread (Python runs signal
    handlers there): `stop = StopRequest().install(["SIGUSR1", "SIGTERM"])`, then `stop.requested`
    between steps, `stop.uninstall()` (or `with StopRequest().install(...)`) at the end."""

    def __init__(self) -> None:
        self._signum = 0  # written only by the handler; reading an int attribute is atomic
        self._previous: dict[signal.Signals, object] = {}

    def install(self, signal_names: Iterable[str]) -> StopRequest:
        wanted = [parse_signal(n) for n in signal_names]  # every name checked before any handler
        if threading.current_thread() is not threading.main_thread():
            raise CordeeError("stop signal handlers can only be installed from the main thread")
        for sig in dict.fromkeys(wanted):
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        # Only a flag: the loop does the work between steps (nothing here may block or allocate much).
        if not self._signum:
            self._signum = signum

    @property
    def requested(self) -> bool:
        return self._signum != 0

    @property
    def signum(self) -> int:
        """The number of the first stop signal received, 0 if none (for an all_reduce MAX)."""
        return self._signum

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self._signum).name if self._signum else None

    def request(self, signum: int) -> None:
        """Record a stop another rank received (after the loop's all_reduce), unless one is set."""
        if not self._signum and signum:
            self._signum = int(signum)

    def uninstall(self) -> None:
        """Restore the handlers that were in place before install()."""
        while self._previous:
            sig, previous = self._previous.popitem()
            signal.signal(sig, previous)

    def __enter__(self) -> StopRequest:
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()
