"""SIGTERM and SIGINT: stop at the next checkpointable moment inside a training loop, at once elsewhere."""

from __future__ import annotations

import contextlib
import signal


class Stopped(Exception):
    """A signal stopped the job outside a checkpointed training loop; every finished stage is kept."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopOnSignal:
    """SIGTERM / SIGINT handling: inside a checkpointed training loop (`deferred()`), a request the loop honours
    at its next step by saving a checkpoint and stopping; anywhere else, an immediate Stopped. A second
    signal always stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._deferring = 0

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if not first or not self._deferring:
            raise Stopped(signum)

    def __call__(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def deferred(self):
        if self.signum is not None:
            raise Stopped(self.signum)
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
