#!/usr/bin/env python3
"""What clients feel: per-call latency through PAR, direct to the worker, and
under the agent's own server (uvicorn), all in one run.

  * pixell-sdk 0.5.4's real `A2AClient` against an AgentServer agent
    (crates/cli/tests/agents/sdk05, no delays): `send_message` latency and
    `stream_message` time to first event / to the end, on a reused client
    and on a fresh client per call;
  * a streaming agent (examples/agents/ticker) emitting 50 events 10 ms
    apart: the gaps between events as the client sees them, and each event's
    delivery delay (the agent stamps its send time on the shared monotonic clock);
  * A2A gRPC unary `Invoke` through the supervisor (`x-agent-id`) and direct.

Goals printed beside the figures: PAR's overhead over the agent's own server
<= 0.5 ms p50 per call; event gaps within +-1 ms of direct at p99.

Usage: bench/latency.py [--par BINARY] [--quick] [--json FILE]
Needs a venv with pixell-sdk, uvicorn and grpcio (made in target/bench-venv
on first use from bench/requirements.txt). Agent environments are cached in
target/bench-home, so only the first run installs pixell-sdk for the agent.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import ROOT, free_port, pct, wait_for

VENV = os.path.join(ROOT, "target", "bench-venv")
REQUIREMENTS = os.path.join(ROOT, "bench", "requirements.txt")
SDK_AGENT = os.path.join(ROOT, "crates", "cli", "tests", "agents", "sdk05")
TICKER = os.path.join(ROOT, "examples", "agents", "ticker")
PROTO_DIR = os.path.join(ROOT, "crates", "a2a", "proto")


def log(msg):
    print(f"latency: {msg}", file=sys.stderr, flush=True)


def ensure_venv():
    """Re-runs this script under target/bench-venv (created or refreshed when
    bench/requirements.txt changes)."""
    py = os.path.join(VENV, "bin", "python")
    stamp_file = os.path.join(VENV, ".stamp")
    with open(REQUIREMENTS) as f:
        stamp = f.read()
    current = open(stamp_file).read() if os.path.exists(stamp_file) else None
    if not os.path.exists(py) or current != stamp:
        log(f"installing the benchmark's Python tools into {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQUIREMENTS],
                       check=True)
        with open(stamp_file, "w") as f:
            f.write(stamp)
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def get_json(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except Exception:  # noqa: BLE001 - not up yet
        return None, None


def summary(ms):
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p99_ms": round(pct(ms, 99), 3),
            "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


class Servers:
    """The supervisor with both agents, and both agents under uvicorn."""

    def __init__(self, par, tmp):
        self.par, self.tmp, self.procs = par, tmp, []

    def start(self):
        self.sup_port = free_port()
        cfg = os.path.join(self.tmp, "latency.toml")
        with open(cfg, "w") as f:
            f.write(
                f'[supervisor]\nport = {self.sup_port}\nworker_ports = "18301-18400"\n\n'
                f'[[agents]]\nid = "sdk"\npackage = "{SDK_AGENT}"\nenv_vars = {{ SDK05_DELAY = "0" }}\n\n'
                f'[[agents]]\nid = "tick"\npackage = "{TICKER}"\n'
            )
        home = os.path.join(ROOT, "target", "bench-home")
        env = dict(os.environ, PAR_HOME=home, PAR_LOG="warn")
        env.pop("PAR_ADMIN_TOKEN", None)
        self.spawn("supervisor", [self.par, "supervisor", "--config", cfg], env, None)
        base = f"http://127.0.0.1:{self.sup_port}"
        log("waiting for the agents (the first run installs pixell-sdk into the agent's environment)")

        def ready():
            st, body = get_json(f"{base}/supervisor/processes")
            if st != 200:
                return None
            procs = {p["agent_id"]: p for p in body["processes"]}
            for p in procs.values():
                if p["state"] == "failed":
                    raise SystemExit(f"agent {p['agent_id']} failed: {p.get('last_error')}")
            if all(procs.get(a, {}).get("state") == "ready" for a in ("sdk", "tick")):
                return procs
            return None

        procs = wait_for(ready, 900, 0.2)
        if not procs:
            raise SystemExit(f"agents not ready; see {self.tmp}/supervisor.log")
        self.worker = {a: procs[a]["port"] for a in ("sdk", "tick")}
        self.own = {}
        for agent, cwd, app, extra in (("sdk", SDK_AGENT, "src.server:app", {"SDK05_DELAY": "0"}),
                                       ("tick", TICKER, "src.app:app", {})):
            port = free_port()
            env = dict(os.environ, **extra)
            self.spawn(f"uvicorn-{agent}", [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
                                            "--port", str(port), "--log-level", "warning"], env, cwd)
            self.own[agent] = port
        for agent, port in self.own.items():
            path = "/.well-known/agent.json" if agent == "sdk" else "/health"
            if not wait_for(lambda: get_json(f"http://127.0.0.1:{port}{path}")[0] == 200, 60):
                raise SystemExit(f"uvicorn for {agent} did not come up")
        self.base = base

    def spawn(self, name, argv, env, cwd):
        out = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def urls(self, agent):
        """The agent's base URL through PAR, direct to its worker, and under uvicorn."""
        return {
            "PAR": f"{self.base}/agents/{agent}",
            "worker": f"http://127.0.0.1:{self.worker[agent]}",
            "own": f"http://127.0.0.1:{self.own[agent]}",
        }

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


async def a2a_client_rows(url, n_reused, n_fresh):
    from pixell.sdk.a2a.client import A2AClient

    async def stream_once(client, text):
        t0 = time.perf_counter()
        first = None
        async for _ in client.stream_message(text):
            if first is None:
                first = time.perf_counter() - t0
        return first * 1000, (time.perf_counter() - t0) * 1000

    out = {}
    async with A2AClient(url, "bench-jwt") as client:
        for _ in range(5):  # warm the connection and the agent
            await client.send_message("warm")
        send = []
        for i in range(n_reused):
            t0 = time.perf_counter()
            r = await client.send_message(f"hello {i}")
            send.append((time.perf_counter() - t0) * 1000)
            assert r is not None
        firsts, totals = [], []
        for i in range(n_reused):
            f, t = await stream_once(client, f"stream {i}")
            firsts.append(f)
            totals.append(t)
    out["send_message/reused"] = summary(send)
    out["stream_first_event/reused"] = summary(firsts)
    out["stream_total/reused"] = summary(totals)
    send, firsts = [], []
    for i in range(n_fresh):
        async with A2AClient(url, "bench-jwt") as client:
            t0 = time.perf_counter()
            await client.send_message(f"fresh {i}")
            send.append((time.perf_counter() - t0) * 1000)
        async with A2AClient(url, "bench-jwt") as client:
            f, _ = await stream_once(client, f"fresh stream {i}")
            firsts.append(f)
    out["send_message/fresh"] = summary(send)
    out["stream_first_event/fresh"] = summary(firsts)
    return out


async def ticker_rows(url, streams, events, gap_ms):
    import httpx

    gaps, delays = [], []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(streams):
            arrivals = []
            async with client.stream("GET", f"{url}/events?n={events}&gap_ms={gap_ms}&pad=1") as r:
                r.raise_for_status()
                buf = ""
                async for chunk in r.aiter_text():
                    now = time.monotonic_ns()
                    buf += chunk
                    while "\n\n" in buf:
                        ev, buf = buf.split("\n\n", 1)
                        for line in ev.splitlines():
                            if line.startswith("data: "):
                                sent = json.loads(line[6:])["t"]
                                arrivals.append(now)
                                delays.append((now - sent) / 1e6)
            gaps += [(b - a) / 1e6 for a, b in zip(arrivals, arrivals[1:])]
    return {"gap": summary(gaps), "delivery_delay": summary(delays)}


def grpc_rows(tmp, port, agent, n):
    import grpc
    from grpc_tools import protoc

    out_dir = os.path.join(tmp, "grpc")
    os.makedirs(out_dir, exist_ok=True)
    if protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                    os.path.join(PROTO_DIR, "agent.proto")]) != 0:
        raise SystemExit("failed to compile agent.proto")
    sys.path.insert(0, out_dir)
    import agent_pb2
    import agent_pb2_grpc

    metadata = (("x-agent-id", agent),) if agent else None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        req = agent_pb2.ActionRequest(action="echo", parameters={"text": "hi"})
        for _ in range(20):
            stub.Invoke(req, metadata=metadata, timeout=10)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = stub.Invoke(req, metadata=metadata, timeout=10)
            times.append((time.perf_counter() - t0) * 1000)
            if not r.success:
                raise SystemExit(f"Invoke failed: {r.error}")
    return summary(times)


def run(par, quick):
    n_reused, n_fresh = (50, 20) if quick else (200, 50)
    streams = 5 if quick else 20
    grpc_n = 200 if quick else 1000
    results = {}
    with tempfile.TemporaryDirectory(prefix="par-latency-") as tmp:
        s = Servers(par, tmp)
        try:
            s.start()
            a2a, tick = s.urls("sdk"), s.urls("tick")
            for name, url in a2a.items():
                log(f"A2AClient via {name}")
                results[f"a2a/{name}"] = asyncio.run(a2a_client_rows(url, n_reused, n_fresh))
            for name, url in tick.items():
                log(f"ticker gaps via {name}")
                results[f"ticker/{name}"] = asyncio.run(ticker_rows(url, streams, 50, 10))
            log("gRPC Invoke")
            results["grpc/PAR"] = grpc_rows(tmp, s.sup_port, "tick", grpc_n)
            results["grpc/worker"] = grpc_rows(tmp, s.worker["tick"], None, grpc_n)
        finally:
            s.stop()
    return results


def report(r):
    print("\nLatency as clients see it (ms, p50/p99; 'own' = the same agent under uvicorn)\n")
    rows = ["send_message/reused", "stream_first_event/reused", "stream_total/reused",
            "send_message/fresh", "stream_first_event/fresh"]
    print(f"{'pixell-sdk A2AClient':28} | {'PAR':>15} {'worker':>15} {'own server':>15} | PAR-own p50  goal")
    goals = {}
    for row in rows:
        v = {k: r[f"a2a/{k}"][row] for k in ("PAR", "worker", "own")}
        over = v["PAR"]["p50_ms"] - v["own"]["p50_ms"]
        ok = over <= 0.5
        goals[f"a2a {row}: PAR-own p50 <= 0.5 ms"] = {"met": ok, "value": round(over, 3)}
        print(f"{row:28} | " + " ".join(f"{v[k]['p50_ms']:>7.2f}/{v[k]['p99_ms']:<7.2f}" for k in ("PAR", "worker", "own"))
              + f" | {over:+8.2f} ms  [{'met' if ok else 'MISSED'}]")
    print(f"\n{'ticker, 50 events 10 ms apart':28} | {'PAR':>15} {'worker':>15} {'own server':>15} | PAR-worker p99")
    for row in ("gap", "delivery_delay"):
        v = {k: r[f"ticker/{k}"][row] for k in ("PAR", "worker", "own")}
        diff = v["PAR"]["p99_ms"] - v["worker"]["p99_ms"]
        line = f"{row:28} | " + " ".join(f"{v[k]['p50_ms']:>7.2f}/{v[k]['p99_ms']:<7.2f}" for k in ("PAR", "worker", "own"))
        if row == "gap":
            ok = abs(diff) <= 1.0
            goals["event gaps within +-1 ms of direct at p99"] = {"met": ok, "value": round(diff, 3)}
            line += f" | {diff:+8.2f} ms  [{'met' if ok else 'MISSED'}]"
        print(line)
    g, w = r["grpc/PAR"], r["grpc/worker"]
    print(f"\n{'A2A gRPC Invoke (unary)':28} | {g['p50_ms']:>7.2f}/{g['p99_ms']:<7.2f} {w['p50_ms']:>7.2f}/{w['p99_ms']:<7.2f}"
          f" {'-':>15} | PAR-worker p50 {g['p50_ms'] - w['p50_ms']:+.2f} ms")
    r["goals"] = goals
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--par", help="par binary (default: build the release one)")
    ap.add_argument("--quick", action="store_true", help="fewer calls per row")
    ap.add_argument("--json", help="write the figures as JSON to this file")
    args = ap.parse_args()
    ensure_venv()
    par = args.par
    if not par:
        log("building par (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "par"], cwd=ROOT, check=True)
        par = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "par")
    results = report(run(os.path.abspath(par), args.quick))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
