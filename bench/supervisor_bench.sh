#!/usr/bin/env bash
# Supervisor overhead: POST /agents/a/invoke through the supervisor vs the same
# worker direct, at 1, 16 and 64 connections (wrk), and the supervisor's RSS
# idle and under load. Not a test: it prints figures.
#
# Usage: bench/supervisor_bench.sh [SECONDS]   (PAR_BIN=path to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ -z "${PAR_BIN:-}" ]; then
  cargo build --release -q -p par
  PAR_BIN="${CARGO_TARGET_DIR:-target}/release/par"
fi
TMP="$(mktemp -d /tmp/par-sup-bench.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$TMP/bench.toml" <<TOML
[supervisor]
port = $PORT
host = "127.0.0.1"
worker_ports = "28001-28100"
[[agents]]
id = "a"
package = "$PWD/examples/agents/echo"
TOML
PAR_HOME="$TMP/home" PAR_LOG=warn "$PAR_BIN" supervisor --config "$TMP/bench.toml" >"$TMP/sup.log" 2>&1 &
SUP=$!
cleanup() { kill -TERM "$SUP" 2>/dev/null || true; wait "$SUP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$PORT/agents/a/health" >/dev/null 2>&1 && break
  sleep 0.1
done
WPORT="$(curl -s "http://127.0.0.1:$PORT/supervisor/processes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["processes"][0]["port"])')"
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SUP/status"; }
echo "supervisor RSS idle: $(rss) MiB"
cat > "$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"text":"hello from wrk, a body of a realistic size for a trivial invoke"}'
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # url conns -> "rps p50 p99"
  local t=2; [ "$2" = 1 ] && t=1
  wrk -t"$t" -c"$2" -d"${DUR}s" --latency -s "$TMP/post.lua" "$1" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /Non-2xx/ {err=$NF} END {printf "%s %s %s %s", rps, p50, p99, (err==""?0:err)}'
}
printf "%-6s %-12s %10s %10s %10s %8s\n" conns target req/s p50 p99 non2xx
max_rss=0
for c in 1 16 64; do
  d=($(run "http://127.0.0.1:$WPORT/invoke" "$c"))
  p=($(run "http://127.0.0.1:$PORT/agents/a/invoke" "$c"))
  r=$(rss); max_rss=$(python3 -c "print(max($max_rss, $r))")
  printf "%-6s %-12s %10s %10s %10s %8s\n" "$c" direct "${d[0]}" "${d[1]}" "${d[2]}" "${d[3]}"
  printf "%-6s %-12s %10s %10s %10s %8s\n" "$c" supervisor "${p[0]}" "${p[1]}" "${p[2]}" "${p[3]}"
  python3 -c "print(f'       proxied/direct = {${p[0]}/${d[0]}:.3f}')"
done
echo "supervisor RSS after load: $(rss) MiB (max seen between runs: $max_rss MiB)"
