"""How many requests arrived in this turn of the event loop and have not yet entered the app.

uvicorn's protocol starts one task per request as it parses what a read brought, and the event
loop then runs those tasks one after another. :class:`service.connections.GuardedHttpProtocol`
counts a request when its task is started, :class:`service.observability.ObservabilityMiddleware`
when the task enters the app; a request that reaches the data plane while others are still
queued knows they will be there within the same turn, and :mod:`service.dataplane` batches
their forward passes.
"""

from __future__ import annotations

__all__ = ["ARRIVALS", "Arrivals"]


class Arrivals:
    """Requests whose task has been started but has not yet entered the app, in this worker.

    The protocol starts a task per request as it parses them, then the event loop runs the
    tasks one after another; a request entering the app while ``queued`` is above zero knows
    that others arrived in the same turn (:mod:`service.dataplane` batches them).
    """

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = 0

    def entered(self) -> None:
        """One request's task entered the app."""
        if self.queued:
            self.queued -= 1


ARRIVALS = Arrivals()
