"""``python -m service``: check the model, then serve it with uvicorn.

A missing or corrupted model directory ends the process with exit status 2 and one line on
stderr, instead of a traceback or a server that cannot answer. SIGTERM (and Ctrl-C) stop
accepting connections, let in-flight requests finish, and exit with status 0.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn

from service.app import create_app
from service.artifact import ArtifactError
from service.model import Autoencoder
from service.settings import get_settings


def _drained(signum: int, frame: FrameType | None) -> None:
    """Runs when uvicorn re-raises the stop signal after draining: the stop was clean."""


def main() -> int:
    settings = get_settings()
    try:
        model = Autoencoder.from_dir(settings.model_dir)
    except ArtifactError as exc:
        print(f"digitcode: cannot serve: {exc}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM itself while serving (stop accepting, drain in-flight requests),
    # then restores these handlers and raises the signal again, which by default would kill
    # the process with status 143 after a clean shutdown.
    signal.signal(signal.SIGTERM, _drained)
    uvicorn.run(
        create_app(settings, model=model),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
