"""digitcode inference service: a numpy-only autoencoder behind FastAPI."""

import os

# One BLAS thread per worker process. Requests are small matrices; with several BLAS threads
# per request, threads fight over the cores (measured on 2 cores under load: a 1000-row encode
# took 12.7 ms threaded, 2.3 ms single-threaded). Scale with workers, not BLAS threads. This
# must run before numpy is first imported; an explicit environment setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
