"""Throughput and latency benchmarks: ``make bench`` (``python -m benchmarks.run``).

Not part of the installed package and not run by ``make test``; see :mod:`benchmarks.run`.
The runner computes its reference answers in one BLAS thread, as the servers it starts do
(:func:`benchmarks.servers.server_environment`): set here, before anything imports numpy.
"""

from service.tuning import limit_blas_threads

limit_blas_threads()
