"""Stop at a step boundary on SIGINT/SIGTERM, so an interrupted run checkpoints instead of losing work."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

SAME_REQUEST_S = 1.0
"""A signal this soon after the first is the same request, not a second one: a terminal's Ctrl-C reaches
a supervised run's child (`kiln train --max-restarts`) itself and again through its supervisor."""


class StopRequest:
    """Set by a signal handler; the training loop polls it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at = 0.0

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(
    request: StopRequest | None = None, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[StopRequest]:
    """While active, the first SIGINT/SIGTERM only sets the returned flag (`request`, or a new one); a
    second one (after SAME_REQUEST_S) interrupts at once. Outside the main thread (where handlers
    cannot be set) the flag simply never sets."""
    request = StopRequest() if request is None else request
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request:
            if time.monotonic() - request.at < SAME_REQUEST_S:
                return
            raise KeyboardInterrupt
        request.signum, request.at = signum, time.monotonic()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
