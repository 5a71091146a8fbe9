"""``python -m service``: check the model, then serve it with uvicorn.

A missing or corrupted model directory ends the process with exit status 2 and one line on
stderr, instead of a traceback or a server that cannot answer.
"""

from __future__ import annotations

import sys

import uvicorn

from service.app import create_app
from service.artifact import ArtifactError
from service.model import Autoencoder
from service.settings import get_settings


def main() -> int:
    settings = get_settings()
    try:
        model = Autoencoder.from_dir(settings.model_dir)
    except ArtifactError as exc:
        print(f"digitcode: cannot serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings, model=model),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
