"""digitcode client: talk to the service over HTTP with numpy arrays.

>>> from digitcode import Client                                   # doctest: +SKIP
>>> with Client("http://127.0.0.1:8000") as c:                  # doctest: +SKIP
...     Z = c.encode(X)                                         # (n, 64) -> (n, 2)
"""

from digitcode._client import DEFAULT_BATCH_SIZE, DEFAULT_URL, AsyncClient, Client, Outliers
from digitcode._exceptions import APIError, ClientError, DigitcodeError, ServerError, TransportError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_URL",
    "APIError",
    "AsyncClient",
    "Client",
    "ClientError",
    "DigitcodeError",
    "Outliers",
    "ServerError",
    "TransportError",
]
