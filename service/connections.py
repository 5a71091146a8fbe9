"""Connection guards: slow or oversized clients are cut at the HTTP layer, cheaply.

uvicorn bounds neither the size of request headers nor the time a client may take to send them
or its body, and keeps every connection it accepts. So one worker's inference slots, memory and
file descriptors could be held by clients that never finish a request (slowloris). This is
uvicorn's httptools protocol with the limits nginx and Kestrel apply:

=============================  ======================================================  ======
limit (:class:`Limits`)        when it is broken                                       answer
=============================  ======================================================  ======
``max_connections``            a new connection beyond it (per worker)                 503
``max_header_bytes``           request line and headers larger than this               431
``header_timeout``             headers not complete this long after the request began  408
``body_min_rate`` after        fewer than ``rate * (t - grace)`` body bytes at time    408
``body_grace``                 ``t`` since the headers (Kestrel's rule)
``body_timeout``               body not complete this long after the headers           408
=============================  ======================================================  ======

Each answer is the service's JSON error (:mod:`service.errors`) with ``Connection: close``, and
the connection is closed. A connection whose reading *we* paused (the app is not consuming its
body yet) is not charged for it. When the app is already reading the body it was cut from, its
``receive()`` sees a disconnect and the error in ``scope["state"]``
(:data:`CUT_STATE_KEY`), so the request is logged and counted with the same 408.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.arrivals import ARRIVALS
from service.errors import RequestError, error_style
from service.observability import record_refusal

__all__ = ["CUT_STATE_KEY", "SWEEP_SECONDS", "GuardedHttpProtocol", "Limits"]

CUT_STATE_KEY = "connection_cut"
# How often one worker checks its connections' deadlines (so a limit is applied up to this late).
SWEEP_SECONDS = 0.5
# After an error answer, read and drop the client's bytes for this long, or this many.
_LINGER_S = 2.0
_LINGER_MAX_BYTES = 256 * 1024
# At shutdown, a connection accepted with nothing received yet most likely has its request on
# the way (its client connected just before the listener closed): it gets this long to send it.
_SHUTDOWN_GRACE_S = 1.0


@dataclass(frozen=True)
class Limits:
    """What one worker allows a connection (see the module's table; defaults in Settings)."""

    max_connections: int
    max_header_bytes: int
    header_timeout: float
    body_min_rate: float  # bytes/s
    body_grace: float
    body_timeout: float


def raw_error(error: RequestError, path: str = "") -> bytes:
    """``error`` as a complete HTTP/1.1 answer that closes the connection."""
    style = error_style(path)
    body = error.body(style)
    lines = [
        STATUS_LINE[error.status_for(style)],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        *(name + b": " + value + b"\r\n" for name, value in error.raw_headers()),
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


# What a connection is doing, for the sweeper.
_IDLE, _HEADERS, _BODY = 0, 1, 2


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of :class:`Limits`.

    Made by uvicorn with its usual arguments; ``limits`` is bound beforehand with
    :func:`functools.partial` (``uvicorn.run(..., http=partial(GuardedHttpProtocol,
    limits=...))``). A request only records when it entered its phase; one sweep per worker
    every :data:`SWEEP_SECONDS` checks every connection's deadlines (no timer per request: a
    single-vector request costs no more than before).
    """

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._phase = _IDLE
        self._since = 0.0  # loop time the phase began
        self._phase_bytes = 0  # bytes received in it
        self._paused_for = 0.0  # seconds of the body phase we did not read (our doing)
        self._cut = False
        self._dropped = 0
        self._linger: asyncio.TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _Sweeper.of(self.server_state, self.loop).start()
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                RequestError(
                    503,
                    f"Server busy: {self.limits.max_connections} open connections "
                    "(limit per worker); retry shortly",
                ),
                "connection_limit",
            )
            return
        # A connection that never sends a byte is cut like a request whose headers never end.
        self._enter(_HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Called by uvicorn when the server shuts down (after the drain, once the listener is
        closed): idle connections close, requests in flight finish and then close.

        Unlike uvicorn, a connection just opened (nothing received yet) is not closed at once
        but after :data:`_SHUTDOWN_GRACE_S`, and one whose request headers are arriving once
        they are in: in a rolling restart the other workers keep the port open and clients
        keep connecting, and closing a connection its client has just opened (and may already
        be writing to) fails the request. What arrives in time is served, with ``Connection:
        close`` (the service is draining).
        """
        self._shut_down(first=True)

    def _shut_down(self, first: bool = False) -> None:
        cycle = self.cycle
        starting = (
            not self._cut and self._phase == _HEADERS and (cycle is None or cycle.response_complete)
        )
        # A request starting: wait once for it to come; while its headers come, for them (the
        # header timeout bounds that wait).
        if starting and (first or self._phase_bytes):
            self.loop.call_later(_SHUTDOWN_GRACE_S, self._shut_down)
        else:
            HttpToolsProtocol.shutdown(self)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        ARRIVALS.queued += 1
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    # Hot path: plain base-class calls (no super() object), and no override of the callbacks
    # that need none (a request pipelined behind another in one read gets its header clock
    # from its next read, or uvicorn's keep-alive timeout closes the connection).

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received (keep-alive timer, parse, refuse what cannot be parsed),
        # with the phases' bookkeeping around it, done here rather than in parser callbacks:
        # one Python call per read, whatever the request.
        if self._cut:  # lingering: dropped, up to a point
            self._dropped += len(data)
            if self._dropped > _LINGER_MAX_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._phase == _IDLE:  # a new request on a kept-alive connection
            self._phase = _HEADERS
            self._phase_bytes = 0
            self._since = 0.0
        self._phase_bytes += len(data)
        before = self.cycle
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        cycle = self.cycle
        if cycle is not before:
            # Headers completed in this read (uvicorn made the request's cycle; its app task
            # has not run yet). The bytes read are an upper bound of their size.
            if self._phase_bytes > self._max_header_bytes and self._header_size() > (
                self._max_header_bytes
            ):
                self._refuse(self._headers_too_large(), "headers_too_large")
            elif cycle.more_body:  # the body phase, until the message is complete
                self._phase = _BODY
                self._phase_bytes = len(cycle.body)
                self._since = self.loop.time()
                self._paused_for = 0.0
            else:
                self._phase = _IDLE
        elif self._phase == _HEADERS:
            if self._phase_bytes > self._max_header_bytes:
                self._refuse(self._headers_too_large(), "headers_too_large")
            elif not self._since:  # the request's first read: its clock starts
                self._since = self.loop.time()
        elif self._phase == _BODY and not cycle.more_body:
            self._phase = _IDLE

    # -- limits -----------------------------------------------------------------------------

    def _enter(self, phase: int) -> None:
        self._phase = phase
        self._since = self.loop.time()
        self._phase_bytes = 0
        self._paused_for = 0.0

    def sweep(self, now: float) -> None:
        """Cut this connection if its request is past a deadline (called by the sweeper)."""
        if self._cut or self._phase == _IDLE:
            return
        if self._phase == _BODY and not self.cycle.more_body:
            self._phase = _IDLE
            return
        limits = self.limits
        elapsed = now - self._since
        if self._phase == _HEADERS:
            if elapsed > limits.header_timeout:
                idle = self._phase_bytes == 0
                self._refuse(
                    RequestError(
                        408, f"Request headers not complete within {limits.header_timeout:g} s"
                    ),
                    "idle" if idle else "header_timeout",
                    quietly=idle,
                )
            return
        if self.flow.read_paused:  # we stopped reading (the app has not taken what came)
            self._paused_for += SWEEP_SECONDS
        elapsed -= self._paused_for
        if elapsed > limits.body_timeout:
            what = f"not complete within {limits.body_timeout:g} s"
        elif (
            elapsed > limits.body_grace
            and self._phase_bytes < (elapsed - limits.body_grace) * limits.body_min_rate
        ):
            what = f"arriving slower than {limits.body_min_rate:g} bytes/s"
        else:
            return
        error = RequestError.one(408, ["body"], f"Request body {what}", "body_timeout")
        self._refuse(error, "body_timeout")

    def _header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _headers_too_large(self) -> RequestError:
        return RequestError(
            431, f"Request headers exceed the limit of {self.limits.max_header_bytes} bytes"
        )

    def _refuse(self, error: RequestError, reason: str, quietly: bool = False) -> None:
        """Answer ``error`` (unless this request has an answer already, or ``quietly``); close.

        ``reason`` labels the refusal in the log and metrics when the app never saw the request
        (the app logs and counts those it was serving, with the same status).
        """
        self._cut = True
        self._phase = _IDLE
        cycle = self.cycle
        current = cycle is not None and cycle.scope is self.scope  # the app has this request
        running = current and not cycle.response_complete
        if not running:
            record_refusal(error.status_code, reason, self.client)
        if running:
            # The app may be reading this request's body: it sees a disconnect, and why.
            cycle.scope["state"][CUT_STATE_KEY] = error
        if not quietly and not (current and cycle.response_started):
            path = self.scope.get("path", "") if self.scope else ""
            self.transport.write(raw_error(error, path))
        if running:
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.can_write_eof():
            # A lingering close, as nginx does: closing with the client's bytes still unread
            # would send a reset, and the client could lose the answer. Send what we have and
            # end our side; read and drop what still comes, for a moment and up to 256 KB
            # (an attacker's megabytes are not worth reading); then close.
            self.transport.write_eof()
            self._linger = self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()


class _Sweeper:
    """Every :data:`SWEEP_SECONDS`, while a worker has connections, checks their deadlines."""

    def __init__(self, server_state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.connections: set[Any] = server_state.connections
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, server_state: Any, loop: asyncio.AbstractEventLoop) -> _Sweeper:
        """The worker's sweeper (one per uvicorn server)."""
        sweeper: _Sweeper | None = getattr(server_state, "digitcode_sweeper", None)
        if sweeper is None:
            sweeper = cls(server_state, loop)
            server_state.digitcode_sweeper = sweeper
        return sweeper

    def start(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, GuardedHttpProtocol):
                connection.sweep(now)
        if self.connections:
            self.start()
