#!/usr/bin/env bash
# End-to-end test of the Docker image: build it, run it read-only as a non-root user, and check
# that POST /encode answers exactly like the in-process app.
#
# Run as root from the repository root (`make docker-test`). Works on a fresh Debian bookworm
# machine with no Docker daemon and no access to Docker Hub:
#   * if `docker info` fails, docker.io (and debootstrap) are installed with apt-get and a
#     private dockerd is started whose state lives entirely in a temporary directory;
#   * if the image python:3.11-slim is missing, a stand-in is built with debootstrap from the
#     machine's Debian mirror and `docker import`ed under that name.
# The only case that is skipped (exit 0) is a dockerd that cannot start on this machine.
#
# Environment knobs: PYTHON (default .venv/bin/python), DIGITCODE_TEST_DATA (default
# data/optdigits.tes).
set -euo pipefail

IMAGE=digitcode:test
BASE_IMAGE=python:3.11-slim
NAME="digitcode-test-$$"
SUITE=bookworm

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd)
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
DATA_FILE=${DIGITCODE_TEST_DATA:-$REPO_ROOT/data/optdigits.tes}

START_TIME=$(date +%s)
TMP=""              # temporary directory (dockerd state, rootfs, scratch files)
DOCKERD_PID=""      # set only if this script started dockerd
CONTAINER_STARTED=0
POLICY_RC_CREATED=0

step() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
fail() { printf 'docker-test: FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP: docker-test: %s\n' "$*"; exit 0; }

# State of a process ("" if gone). A child that exited stays a zombie (Z) until reaped.
proc_state() { sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true; }
proc_alive() { local s; s=$(proc_state "$1"); [ -n "$s" ] && [ "$s" != Z ]; }

stop_dockerd() {
    local i containerd_pid=""
    [ -n "$DOCKERD_PID" ] || return 0
    containerd_pid=$(cat "$TMP/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        proc_alive "$DOCKERD_PID" || break
        sleep 0.5
    done
    if proc_alive "$DOCKERD_PID"; then
        echo "   dockerd did not stop within 30 s; killing it" >&2
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        if [ -n "$containerd_pid" ] && proc_alive "$containerd_pid"; then
            kill -KILL "$containerd_pid" 2>/dev/null || true
        fi
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
}

# Unmount anything left below $1 (deepest first), then delete it without crossing into other
# file systems (a failed debootstrap may leave /proc, /sys or a bind-mounted /dev behind).
remove_tree() {
    local dir=$1 mnt
    [ -n "$dir" ] && [ -e "$dir" ] || return 0
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    done
    rm -rf --one-file-system "$dir"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$CONTAINER_STARTED" = 1 ]; then
        if [ "$rc" -ne 0 ]; then
            echo "== container logs ($NAME)" >&2
            docker logs "$NAME" >&2 2>&1
            docker inspect -f 'state: {{json .State}}' "$NAME" >&2 2>&1
        fi
        docker rm -f "$NAME" >/dev/null 2>&1
    fi
    if [ "$POLICY_RC_CREATED" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [ -n "$DOCKERD_PID" ]; then
        if [ "$rc" -ne 0 ] && [ -f "$TMP/dockerd.log" ]; then
            echo "== last dockerd log lines" >&2
            tail -n 20 "$TMP/dockerd.log" >&2
        fi
        echo "== stopping the temporary dockerd"
        t=$(date +%s)
        stop_dockerd
        echo "   stopped in $(($(date +%s) - t)) s"
    fi
    t=$(date +%s)
    remove_tree "$TMP"
    [ -n "$TMP" ] && echo "   removed $TMP in $(($(date +%s) - t)) s"
    if [ "$rc" -ne 0 ]; then
        echo "docker-test: FAILED (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || fail "need to install $* but apt-get is not available"
    [ "$(id -u)" = 0 ] || fail "need to install $* but not running as root"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' services (docker, containerd) from being started by the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        info "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    info "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if [ "$POLICY_RC_CREATED" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

# First http(s) Debian mirror from the apt sources (not the security archive).
debian_mirror() {
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\// && $i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\// && $i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------------------------
step "prerequisites"
[ -x "$PYTHON" ] || fail "$PYTHON not found (run 'make' first to create the venv)"
[ -f Dockerfile ] || fail "no Dockerfile in $REPO_ROOT"
"$PYTHON" -c 'import fastapi.testclient, service.app, service.settings' \
    || fail "$PYTHON cannot import the service (is the venv up to date?)"
TMP=$(mktemp -d /tmp/digitcode-docker.XXXXXX)
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
info "repo: $REPO_ROOT, python: $PYTHON, scratch: $TMP"

# ---------------------------------------------------------------------------------------------
step "docker daemon"
if timeout 20 docker info >/dev/null 2>&1; then
    info "using the running daemon (${DOCKER_HOST:-default socket})"
else
    missing=()
    { command -v docker && command -v dockerd; } >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    # With AppArmor enabled in the kernel, dockerd needs apparmor_parser to start containers.
    if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || true)" = Y ] \
        && ! command -v apparmor_parser >/dev/null 2>&1; then
        missing+=(apparmor)
    fi
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

    mkdir -p "$TMP/data" "$TMP/exec"
    export DOCKER_HOST="unix://$TMP/docker.sock"
    info "starting dockerd (state in $TMP)"
    dockerd --data-root "$TMP/data" --exec-root "$TMP/exec" --pidfile "$TMP/dockerd.pid" \
        --host "$DOCKER_HOST" --iptables=false --ip-masq=false --bridge=none \
        >"$TMP/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    ready=0
    for ((i = 0; i < 120; i++)); do
        if ! proc_alive "$DOCKERD_PID"; then
            wait "$DOCKERD_PID" 2>/dev/null || true
            DOCKERD_PID=""
            reason=$(grep -v '^\s*$' "$TMP/dockerd.log" | tail -n 1 | cut -c1-300 || true)
            skip "dockerd cannot start on this machine: ${reason:-exited without a message}"
        fi
        if timeout 10 docker info >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.5
    done
    if [ "$ready" != 1 ]; then
        reason=$(grep -v '^\s*$' "$TMP/dockerd.log" | tail -n 1 | cut -c1-300 || true)
        stop_dockerd
        skip "dockerd did not become ready within 60 s: ${reason:-no log output}"
    fi
    info "dockerd $(docker version -f '{{.Server.Version}}') ready (pid $DOCKERD_PID)"
fi

# ---------------------------------------------------------------------------------------------
step "base image $BASE_IMAGE"
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    info "present"
else
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    MIRROR=$(debian_mirror)
    ROOTFS="$TMP/rootfs"
    info "not present: building a Debian $SUITE stand-in with debootstrap from $MIRROR"
    t0=$(date +%s)
    if ! debootstrap --variant=minbase --include=ca-certificates,python3,python3-pip,python3-venv \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$TMP/debootstrap.log" 2>&1; then
        tail -n 30 "$TMP/debootstrap.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
        fail "debootstrap failed"
    fi
    # Host CA bundle (may hold extra CAs needed to reach PyPI). The host's pip configuration
    # is deliberately NOT copied: it may point at local file:// indexes. Pip must be usable
    # system-wide like in the real image, hence no EXTERNALLY-MANAGED marker.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    fi
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    [ -x "$ROOTFS/usr/bin/python3" ] || fail "the stand-in rootfs has no /usr/bin/python3"
    tar --numeric-owner -C "$ROOTFS" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    remove_tree "$ROOTFS"
    base_python=$(docker run --rm --network none "$BASE_IMAGE" python3 --version)
    info "imported $BASE_IMAGE in $(($(date +%s) - t0)) s ($base_python)"
fi

# ---------------------------------------------------------------------------------------------
step "docker build -t $IMAGE"
build_args=()
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [ -n "${!v:-}" ]; then build_args+=(--build-arg "$v"); fi
done
t0=$(date +%s)
docker build --network host ${build_args[@]+"${build_args[@]}"} -t "$IMAGE" .
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
info "built in $(($(date +%s) - t0)) s, size $((size / 1000000)) MB"

# ---------------------------------------------------------------------------------------------
step "docker run --read-only"
PORT=""
for ((i = 0; i < 100; i++)); do
    p=$((18500 + RANDOM % 500))
    if "$PYTHON" - "$p" <<'EOF'; then PORT=$p; break; fi
import socket, sys
s = socket.socket()
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
done
[ -n "$PORT" ] || fail "no free port found in 18500-18999"
BASE_URL="http://127.0.0.1:$PORT"

user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
case "${user%%:*}" in
    "" | 0 | root) fail "image runs as root (Config.User='$user')" ;;
esac
info "image user: $user"

CONTAINER_STARTED=1
# Read-only root; the only writable place is a small tmpfs for the workers' shared metrics.
docker run -d --name "$NAME" --network host --read-only \
    --tmpfs /tmp:rw,noexec,nosuid,size=16m \
    --cap-drop ALL --security-opt no-new-privileges \
    -e DIGITCODE_WORKERS=2 \
    --health-interval 2s --health-start-period 60s \
    -e DIGITCODE_PORT="$PORT" "$IMAGE" >/dev/null
info "container $NAME on port $PORT"

code=""
for ((i = 0; i < 120; i++)); do
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] \
        || fail "container exited early (exit code $(docker inspect -f '{{.State.ExitCode}}' "$NAME"))"
    code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 2 "$BASE_URL/readyz" || true)
    [ "$code" = 200 ] && break
    sleep 0.5
done
[ "$code" = 200 ] || fail "GET /readyz did not return 200 within 60 s (last: ${code:-none})"
info "GET /readyz -> 200 after ~$((i / 2)) s"

uid=$(docker exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "the service process runs as root"
info "container uid: $uid"

body=$(curl -sS --noproxy '*' --max-time 5 --fail "$BASE_URL/healthz")
"$PYTHON" -c 'import json, sys; assert json.loads(sys.argv[1]) == {"status": "ok"}, sys.argv[1]' "$body" \
    || fail "GET /healthz returned $body"
info "GET /healthz -> $body"

# The Open Inference Protocol's readiness probe, which KServe's manifests use.
body=$(curl -sS --noproxy '*' --max-time 5 --fail "$BASE_URL/v2/health/ready")
"$PYTHON" -c 'import json, sys; assert json.loads(sys.argv[1]) == {"ready": True}, sys.argv[1]' "$body" \
    || fail "GET /v2/health/ready returned $body"
info "GET /v2/health/ready -> $body"

# The API docs' assets are package data: they must be in the image, not only in the source tree.
code=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "$BASE_URL/docs/assets/swagger-ui-bundle.js" || true)
[ "$code" = 200 ] || fail "GET /docs/assets/swagger-ui-bundle.js returned HTTP ${code:-none}: package data missing from the image?"
info "GET /docs/assets/swagger-ui-bundle.js -> 200"

# ---------------------------------------------------------------------------------------------
step "POST /encode: container vs in-process app"
if [ -f "$DATA_FILE" ]; then
    info "input: first row of $DATA_FILE"
else
    info "input: synthetic row ($DATA_FILE not found)"
fi
"$PYTHON" - "$DATA_FILE" >"$TMP/request.json" <<'EOF'
import json, os, sys
path = sys.argv[1]
if os.path.exists(path):
    with open(path) as f:
        row = [float(x) for x in f.readline().strip().split(",")[:64]]
else:
    row = [float((7 * i) % 17) for i in range(64)]
assert len(row) == 64 and all(0 <= x <= 16 for x in row), row
json.dump({"vectors": [row]}, sys.stdout)
EOF

code=$(curl -sS --noproxy '*' --max-time 10 -o "$TMP/docker.json" -D "$TMP/docker.headers" \
    -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$TMP/request.json" \
    "$BASE_URL/encode" || true)
[ "$code" = 200 ] || fail "POST /encode returned HTTP ${code:-none}: $(cat "$TMP/docker.json" 2>/dev/null || true)"
docker_version=$(awk -F': *' 'tolower($1) == "x-model-version" { sub(/\r$/, "", $2); print $2 }' "$TMP/docker.headers")
[ -n "$docker_version" ] || fail "POST /encode response has no X-Model-Version header"

"$PYTHON" - "$TMP/request.json" "$TMP/inproc.json" <<'EOF' || fail "in-process POST /encode failed"
import json, sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings

with open(sys.argv[1]) as f:
    payload = json.load(f)
with TestClient(create_app(Settings(model_dir="models/default"))) as c:
    r = c.post("/encode", json=payload)
assert r.status_code == 200, (r.status_code, r.text)
with open(sys.argv[2], "w") as f:
    json.dump({"body": r.json(), "version": r.headers.get("X-Model-Version")}, f)
EOF

"$PYTHON" - "$TMP/docker.json" "$TMP/inproc.json" "$docker_version" <<'EOF' || fail "container and in-process answers differ"
import json, sys
with open(sys.argv[1]) as f:
    got = json.load(f)["latent"]
with open(sys.argv[2]) as f:
    ref = json.load(f)
want, want_version = ref["body"]["latent"], ref["version"]
print(f"   container:  latent={got} X-Model-Version={sys.argv[3]}")
print(f"   in-process: latent={want} X-Model-Version={want_version}")
ok = True
if sys.argv[3] != want_version:
    print("   X-Model-Version differs", file=sys.stderr)
    ok = False
if len(got) != len(want) or any(len(a) != len(b) for a, b in zip(got, want)):
    print("   latent shapes differ", file=sys.stderr)
    ok = False
else:
    diff = max(abs(float(x) - float(y)) for a, b in zip(got, want) for x, y in zip(a, b))
    print(f"   max |difference| = {diff:.3g} (tolerance 1e-6)")
    ok = ok and diff <= 1e-6
sys.exit(0 if ok else 1)
EOF

# ---------------------------------------------------------------------------------------------
step "HEALTHCHECK and shutdown"
health=""
for ((i = 0; i < 60; i++)); do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")
    [ "$health" = healthy ] && break
    [ "$health" = unhealthy ] && break
    sleep 0.5
done
[ "$health" = healthy ] || fail "container health is '${health:-none}', expected healthy: $(docker inspect -f '{{json .State.Health}}' "$NAME")"
info "health: $health"
t0=$(date +%s)
docker stop -t 20 "$NAME" >/dev/null
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
info "docker stop took $(($(date +%s) - t0)) s, exit code $exit_code"
[ "$exit_code" = 0 ] || fail "the service exited with $exit_code on SIGTERM"
if [ "$(docker logs "$NAME" 2>&1 | grep -ciE 'read-only file system|permission denied' || true)" != 0 ]; then
    fail "the service tried to write to the read-only file system (see the logs)"
fi

step "done in $(($(date +%s) - START_TIME)) s"
echo "docker-test: OK"
