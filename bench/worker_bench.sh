#!/usr/bin/env bash
# Worker benchmark (prints figures; asserts nothing):
#   1. POST /invoke of a trivial handler (examples/agents/echo) direct to `par worker`:
#      median latency at 1 connection, req/s at 16 connections.
#   2. GET /api/hello of the pk-full fixture (a FastAPI app built by mount(app)):
#      req/s at 16 connections through `par worker`, and the same app under plain uvicorn.
# Needs: wrk (apt-get install -y wrk), python3, a release build (built if missing).
# Env: DURATION (default 10s), PAR_HOME (default a temp dir kept between runs).
# The pk-full fixture comes from dev/build-fixtures (run here; cached in target/fixtures).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
./dev/build-fixtures
FIXTURES=$ROOT/target/fixtures
export PAR_HOME=${PAR_HOME:-/tmp/par-bench-home}
export PAR_LOG=${PAR_LOG:-warn}
PAR=$ROOT/target/release/par

command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
[ -x "$PAR" ] || cargo build --release -p par

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # url timeout_s
  local deadline=$((SECONDS + $2))
  until curl -fs "$1" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "not ready: $1" >&2; exit 1; }
    sleep 0.2
  done
}

start_worker() { # package agent_id -> sets PORT, WPID
  PORT=$(free_port)
  "$PAR" worker --port "$PORT" --agent-id "$2" --package "$1" &
  WPID=$!
  PIDS+=("$WPID")
  wait_ready "http://127.0.0.1:$PORT/health" 600
}

LUA=$(mktemp)
cat >"$LUA" <<'LUA'
wrk.method = "POST"
wrk.body = '{"action":"greet","data":{"x":1}}'
wrk.headers["Content-Type"] = "application/json"
LUA

field() { # wrk output -> "p50 rps"
  awk '/^ +50%/ {p50=$2} /^Requests\/sec/ {rps=$2} END {print p50, rps}'
}

echo "== machine: $(nproc) cores, $(python3 --version 2>&1)"

start_worker "$ROOT/examples/agents/echo" bench-echo
URL="http://127.0.0.1:$PORT/invoke"
wrk -t1 -c1 -d2s -s "$LUA" "$URL" >/dev/null # warm up
read -r P50_1 RPS_1 < <(wrk -t1 -c1 -d"$DURATION" --latency -s "$LUA" "$URL" | field)
read -r P50_16 RPS_16 < <(wrk -t2 -c16 -d"$DURATION" --latency -s "$LUA" "$URL" | field)
kill "$WPID"; wait "$WPID" 2>/dev/null || true

start_worker "$FIXTURES/pk-full-0.1.0.apkg" bench-full
HOST_PID=$(pgrep -P "$WPID" | sed -n 1p)
HOST_PY=$(tr '\0' '\n' <"/proc/$HOST_PID/cmdline" | sed -n 1p) # not head: SIGPIPE under pipefail
PKG_ROOT=$(readlink "/proc/$HOST_PID/cwd")
URL="http://127.0.0.1:$PORT/api/hello"
wrk -t2 -c16 -d2s "$URL" >/dev/null
read -r _ PAR_HELLO < <(wrk -t2 -c16 -d"$DURATION" --latency "$URL" | field)
kill "$WPID"; wait "$WPID" 2>/dev/null || true

UPORT=$(free_port)
(cd "$PKG_ROOT" && exec "$HOST_PY" -c "
import uvicorn
from fastapi import FastAPI
from src.rest.index import mount
app = FastAPI()
mount(app)
uvicorn.run(app, host='127.0.0.1', port=$UPORT, log_level='warning', access_log=False)
") &
PIDS+=($!)
wait_ready "http://127.0.0.1:$UPORT/api/hello" 60
URL="http://127.0.0.1:$UPORT/api/hello"
wrk -t2 -c16 -d2s "$URL" >/dev/null
read -r _ UV_HELLO < <(wrk -t2 -c16 -d"$DURATION" --latency "$URL" | field)

echo
echo "invoke (echo handler) direct to par worker"
echo "  1 connection : p50 $P50_1, $RPS_1 req/s"
echo "  16 connections: p50 $P50_16, $RPS_16 req/s"
echo "GET /api/hello (pk-full FastAPI app), 16 connections"
echo "  par worker   : $PAR_HELLO req/s"
echo "  plain uvicorn: $UV_HELLO req/s"
python3 -c "print(f'  worker/uvicorn: {float(\"$PAR_HELLO\")/float(\"$UV_HELLO\"):.2f}x')"
