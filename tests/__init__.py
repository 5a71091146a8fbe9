"""The test suite. Imported before any test module or conftest, so before numpy.

The tests compute in one BLAS thread, as the server does (:func:`service.tuning.
limit_blas_threads`, applied by ``python -m service`` before numpy loads): float32 results then
do not depend on how a batch is split, and in-process answers equal the server's bit for bit.
"""

from service.tuning import limit_blas_threads

limit_blas_threads()
