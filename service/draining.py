"""Draining on SIGTERM, so that a rolling update fails no client.

Kubernetes sends SIGTERM to a pod at the moment it starts removing it from the Service's
endpoints; for a few seconds load balancers and clients still send it new requests and
connections. Closing the listener at once (uvicorn's default) fails those. So, as Kubernetes and
Envoy recommend, a worker that gets SIGTERM first *drains* for ``DIGITCODE_DRAIN_SECONDS``:

1. ``/readyz`` and ``/v2/health/ready`` answer 503 at once, so probes and balancers stop
   sending;
2. the service keeps accepting and serving, and every answer carries ``Connection: close``, so
   keep-alive clients reconnect (to another pod) for their next request;
3. then uvicorn's graceful shutdown runs: the listener closes, and requests in flight finish
   (up to ``DIGITCODE_SHUTDOWN_TIMEOUT``).

A second SIGTERM, or SIGINT (Ctrl-C), skips what is left of the drain.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["Drain"]

_SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    """One app's draining state, and the SIGTERM handler that starts it.

    Parameters
    ----------
    seconds : float
        How long to keep serving after SIGTERM before the server shuts down (0: at once).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False
        self._server_handlers: dict[int, _SignalHandler] = {}
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> bool:
        """Put the drain in front of the server's own SIGTERM and SIGINT handlers.

        Call from the server's event loop, after the server installed its handlers (the app's
        lifespan does). Only possible in the main thread, so not under test clients. Returns
        whether it was installed.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):  # the server handles no signals: nothing to put before
                self.uninstall()
                return False
            self._server_handlers[sig] = previous
            signal.signal(sig, self._on_signal)
        self._loop = asyncio.get_running_loop()
        return True

    def uninstall(self) -> None:
        """Give the signals back to the server's handlers."""
        for sig, handler in self._server_handlers.items():
            signal.signal(sig, handler)
        self._server_handlers = {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.draining and self.seconds > 0:
            self.draining = True
            # Runs between two bytecodes of the loop's thread: let the loop schedule the rest.
            self._loop.call_soon_threadsafe(self._start_timer, sig)
            return
        self.draining = True
        self._shut_down(sig, frame)

    def _start_timer(self, sig: int) -> None:
        self._timer = self._loop.call_later(self.seconds, self._shut_down, sig, None)

    def _shut_down(self, sig: int, frame: FrameType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        handler = self._server_handlers.get(sig)
        if handler is not None:
            handler(sig, frame)
