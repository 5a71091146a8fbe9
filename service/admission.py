"""Admission: one worker's request slots and its memory budget.

A request is admitted twice. Before its body is read, the memory it will need is reserved
from the worker's budget (Envoy's overload manager admits by memory, not by count): beyond the
budget the answer is 503 with ``Retry-After`` at once, before the body is buffered, and a
request that could never fit is 413. After its body has arrived, it takes one of
``max_concurrency`` slots to compute and answer; a client still sending its body holds none
(:mod:`service.connections` cuts the ones that send too slowly).

The memory a request needs is about :data:`BYTES_PER_BODY_BYTE` times its body (measured for
10 000-row requests, the largest allowed: a 10.8 MB JSON ``/reconstruct`` raised the worker's
peak RSS by 59 MB, its 4.9 MB ``.npy`` form by 30 MB): the body, the parsed and scaled
matrices, the layer activations, the answer's arrays and its encoding. When the last reserved
request of a burst of large ones has finished, the freed heap is handed back to the system
(:func:`service.tuning.release_freed_memory`), so the worker returns to its idle size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.errors import RequestError
from service.parsing import drop_json_parser
from service.tuning import release_freed_memory

__all__ = ["BYTES_PER_BODY_BYTE", "Admission", "memory_needed"]

BYTES_PER_BODY_BYTE = 6
# Every request also needs some fixed memory (scope, buffers, the answer object).
_BYTES_PER_REQUEST = 64 * 1024
# Release the heap once idle after a large request (at least this much reserved: small ones
# reuse what the last left). Each worker then returns to its idle size after any burst; a
# threshold of 16 MiB of large requests left up to 15 of them (+10 % RSS in a soak) unreleased.
_LARGE_BYTES = 1 << 20
_RELEASE_DELAY_S = 0.5


def memory_needed(body_bytes: int) -> int:
    """The memory reserved for a request whose body has ``body_bytes`` bytes."""
    return body_bytes * BYTES_PER_BODY_BYTE + _BYTES_PER_REQUEST


def _release_memory() -> None:
    drop_json_parser()  # its buffers have grown to the largest document parsed
    release_freed_memory()


class Admission:
    """Slots and memory of one worker.

    Parameters
    ----------
    max_concurrency : int
        Requests computing or answering at once; beyond it, 503.
    memory_budget : int
        Bytes of memory in-flight requests may need at once; beyond it, 503.
    release : callable, optional
        Hands freed heap memory back to the system (tests count the calls).
    """

    def __init__(
        self,
        max_concurrency: int,
        memory_budget: int,
        release: Callable[[], object] | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.memory_budget = memory_budget
        self.in_flight = 0
        self.reserved = 0
        self._large_since_release = False
        self._release = release or _release_memory
        self._release_timer: asyncio.TimerHandle | None = None

    # -- slots ------------------------------------------------------------------------------

    def take_slot(self) -> None:
        """Take a slot, or raise a 503 if all are taken."""
        if self.in_flight >= self.max_concurrency:
            raise RequestError(
                503,
                f"Server busy: {self.in_flight} requests in flight "
                f"(limit {self.max_concurrency}); retry shortly",
            )
        self.in_flight += 1

    def give_slot(self) -> None:
        self.in_flight -= 1

    # -- memory -----------------------------------------------------------------------------

    def reserve(self, body_bytes: int) -> int:
        """Reserve what a request with a ``body_bytes`` body needs, or raise 503 (or 413).

        Returns the bytes reserved, for :meth:`release`.
        """
        nbytes = body_bytes * BYTES_PER_BODY_BYTE + _BYTES_PER_REQUEST
        reserved = self.reserved + nbytes
        if reserved > self.memory_budget:
            raise self._refusal(nbytes)
        self.reserved = reserved
        if nbytes >= _LARGE_BYTES:
            self._large_since_release = True
        return nbytes

    def grow(self, body_bytes: int, reserved_before: int) -> int:
        """Reserve for ``body_bytes`` more of a body whose length was not declared.

        ``reserved_before`` is what the request holds already. Returns the bytes added.
        """
        more = body_bytes * BYTES_PER_BODY_BYTE
        if self.reserved + more > self.memory_budget:
            raise self._refusal(reserved_before + more)
        self.reserved += more
        if reserved_before + more >= _LARGE_BYTES:
            self._large_since_release = True
        return more

    def release(self, nbytes: int) -> None:
        """Give back what :meth:`reserve` (and :meth:`grow`) reserved."""
        self.reserved -= nbytes
        if self.reserved == 0 and self._large_since_release and self._release_timer is None:
            # Shortly after, not at once: back-to-back large requests keep reusing the freed
            # heap (service.tuning.keep_freed_memory).
            loop = asyncio.get_running_loop()
            self._release_timer = loop.call_later(_RELEASE_DELAY_S, self._release_now)

    def _refusal(self, request_total: int) -> RequestError:
        if request_total > self.memory_budget:
            return RequestError(
                413,
                f"Request needs about {request_total >> 20} MiB of memory to serve, more than "
                f"this worker's budget of {self.memory_budget >> 20} MiB; send smaller batches",
            )
        return RequestError(
            503,
            f"Server busy: {self.reserved >> 20} MiB of this worker's "
            f"{self.memory_budget >> 20} MiB memory budget in use; retry shortly",
        )

    def _release_now(self) -> None:
        self._release_timer = None
        if self.reserved == 0:  # else the next request to end with none reserved comes back
            self._large_since_release = False
            self._release()
