"""Stop at a step boundary on SIGINT/SIGTERM, so an interrupted run checkpoints instead of losing work."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopRequest:
    """Set by a signal handler; the training loop polls it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(
    request: StopRequest | None = None, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[StopRequest]:
    """While active, the first SIGINT/SIGTERM only sets the returned flag (`request`, or a new one); a
    second one interrupts at once. Outside the main thread (where handlers cannot be set) the flag
    simply never sets."""
    request = StopRequest() if request is None else request
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
