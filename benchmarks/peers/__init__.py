"""``make bench-peers``: the service against MLflow, BentoML and LitServe on the same model.

Each peer serves a scikit-learn autoencoder built from the committed ``models/default`` (the
same weights), from its own pinned virtualenv; every server's answers are checked against that
model in-process before wrk times it. See :mod:`benchmarks.peers.run` and
``benchmarks/README.md``.
"""

__all__: list[str] = []
