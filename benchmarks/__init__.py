"""Throughput and latency benchmarks: ``make bench`` (``python -m benchmarks.run``).

Not part of the installed package and not run by ``make test``; see :mod:`benchmarks.run`.
"""
