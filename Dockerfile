# digitcode service image.
#
#   docker build -t digitcode .
#   docker run --rm -p 8000:8000 digitcode          # then: curl localhost:8000/healthz
#
# Only the server runs here (requirements.lock and service/); the committed model in
# models/default is baked in.
# It starts one worker per CPU (DIGITCODE_WORKERS to change), which share their Prometheus
# metrics through a directory in /tmp; everything else is read-only, so
# `docker run --read-only --tmpfs /tmp` works (with DIGITCODE_WORKERS=1, plain --read-only).
#
# The venv at /opt/venv is created with `python3 -m venv` and everything below uses its
# absolute paths: that works both with the official python:3.11-slim image (Python in
# /usr/local/bin) and with the Debian stand-in that scripts/docker-test.sh builds when Docker
# Hub is not reachable (Python in /usr/bin).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_PROGRESS_BAR=off

RUN python3 -m venv /opt/venv \
 && groupadd --gid 10001 digitcode \
 && useradd --uid 10001 --gid digitcode --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin digitcode

# Layer 1: the locked third-party dependencies, every file checked against its sha256
# (requirements.lock, made by `make lock`), so a rebuilt image holds exactly the tested set.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
 && rm -f /tmp/requirements.lock

# Layer 2: the server application, run from /app as `python -m service` (the same as
# `make serve` runs it from the repository; the client distribution is not needed to serve).
# Compiled here, since the service user cannot write __pycache__ at run time.
WORKDIR /app
COPY service/ /app/service/
RUN /opt/venv/bin/python -m compileall -q /app/service
COPY models/default/ /app/models/default/

ENV DIGITCODE_MODEL_DIR=/app/models/default \
    DIGITCODE_HOST=0.0.0.0 \
    DIGITCODE_PORT=8000 \
    PATH=/opt/venv/bin:$PATH

# Files stay owned by root (read-only for the service user).
USER 10001:10001
EXPOSE 8000

# curl is not in the slim image; use the venv's Python. Proxies are bypassed on purpose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, sys, urllib.request as u; port = os.environ.get('DIGITCODE_PORT', '8000'); r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % port, timeout=4); sys.exit(0 if r.status == 200 else 1)"]

CMD ["/opt/venv/bin/python", "-m", "service"]
