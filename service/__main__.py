"""``python -m service``: check the model, then serve it with uvicorn.

A missing or corrupted model directory ends the process with exit status 2 and one line on
stderr, instead of a traceback or a server that cannot answer. SIGTERM (and Ctrl-C) stop
accepting connections, let in-flight requests finish, and exit with status 0.

With ``DIGITCODE_WORKERS`` > 1, uvicorn's supervisor starts that many worker processes; each
builds the app from the same settings and loads the model in its lifespan, and Prometheus
metrics are shared through a temporary multiprocess directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from functools import partial
from types import FrameType

from service.tuning import limit_blas_threads


def _drained(signum: int, frame: FrameType | None) -> None:
    """Runs when uvicorn re-raises the stop signal after draining: the stop was clean."""


def main() -> int:
    # Before anything imports numpy: BLAS reads its thread count then (workers inherit it).
    limit_blas_threads()
    import uvicorn
    from pydantic import ValidationError

    from service.artifact import ArtifactError
    from service.connections import GuardedHttpProtocol
    from service.observability import MULTIPROC_ENV
    from service.repository import load_repository
    from service.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"DIGITCODE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"digitcode: cannot serve: bad setting: {problems}", file=sys.stderr)
        return 2
    # Imported only now: service.app builds the default app (reading the settings) at import.
    from service.app import create_app

    try:
        repository, refused = load_repository(
            settings.model_dir, settings.default_model, settings.outlier_quantile
        )
    except ArtifactError as exc:
        print(f"digitcode: cannot serve: {exc}", file=sys.stderr)
        return 2
    for problem in refused:  # the rest is served (workers > 1 log each refusal again)
        print(f"digitcode: model refused: {problem}", file=sys.stderr)
    # uvicorn handles SIGTERM itself while serving (stop accepting, drain in-flight requests),
    # then restores these handlers and raises the signal again, which by default would kill
    # the process with status 143 after a clean shutdown.
    signal.signal(signal.SIGTERM, _drained)
    common = {
        # uvicorn's httptools protocol, with limits on slow and oversized clients.
        "http": partial(GuardedHttpProtocol, limits=settings.connection_limits()),
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # one structured line per request comes from the app instead
        "timeout_graceful_shutdown": settings.shutdown_timeout,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings, repository=repository), **common)  # type: ignore[arg-type]
        return 0
    try:
        metrics_dir = tempfile.mkdtemp(prefix="digitcode-metrics-")
    except OSError as exc:
        print(
            f"digitcode: cannot serve: no writable temporary directory for the workers' "
            f"metrics ({exc.strerror}); mount one (docker run --tmpfs /tmp) or set "
            "DIGITCODE_WORKERS=1",
            file=sys.stderr,
        )
        return 2
    os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus-client in each worker
    try:
        uvicorn.run(
            "service.app:app",
            workers=settings.workers,
            # uvicorn's 5 s: on a busy node a new worker (numpy, the app, the model) can take
            # longer, and the SIGHUP reload is then aborted; a busy live one would be killed.
            timeout_worker_healthcheck=settings.worker_timeout,
            **common,  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
