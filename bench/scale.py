#!/usr/bin/env python3
"""Replicas and scale to zero, measured: wake from zero, density, replicas on a CPU-bound handler, SSE streams.

Each row starts its own `par supervisor` (config file `[[agents]]`, its own
temp dir, the environment passed through as bench/run does: started as root,
agents run under per-agent uids; PAR_AGENT_UIDS=off in the environment turns
that off) and prints what it measures; nothing is asserted:

  1. wake from zero: an agent with idle_timeout = "1s"; once status shows it
     `idle` (no pid), POST /invoke -> first 200 through the supervisor,
     median of 5 (goal <= 300 ms);
  2. density: 100 declared stdlib handler agents (--quick: 20), 5 of them kept
     busy by a request loop: total RSS (and PSS) of the supervisor's process
     tree (supervisor, workers, Python hosts), once with idle_timeout (the 95
     others scaled to zero) and once always on;
  3. a CPU-bound handler (a fixed pure-Python loop calibrated to ~2 ms here):
     POST /invoke throughput at 8 connections (wrk, else a thread pool of
     keep-alive http.client connections) with replicas = 1 and replicas = 2,
     and their ratio (goal >= 1.6x on 2 cores);
  4. 2,000 concurrent SSE streams (--quick: 200) through the supervisor to
     examples/agents/ticker (one event a second each), opened at a fixed rate
     (--sse-rate, default 250/s) and held 10 s: time-to-first-event p50/p99,
     supervisor RSS before, during and per stream, CPU of the supervisor and
     of this client (one Python process: a busy client inflates the times).

Usage: bench/scale.py [--par BINARY] [--quick] [--json FILE] [--rows 1,2,3,4] [--sse-rate N]
Bounded: every load or hold phase is at most ~60 s; a full run takes a few
minutes (the density row starts 2 x 100 agents). Without --par it builds the
release binary, like bench/run. The management API is used with the boot
token the supervisor writes to $PAR_HOME/run/supervisor-<port>.token.
"""

import argparse
import asyncio
from http import client as httpclient
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from benchlib import ROOT, free_port, pct, proc_kib, wait_for

TICKER_AGENT = os.path.join(ROOT, "examples", "agents", "ticker")
WORKER_PORTS_LO = 19001  # the supervisor skips any port of its range already in use
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def http(method, url, body=None, timeout=5.0, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
        return None, b""


def build_par():
    log("building par (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "par"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "par")


def rss_kib(pid, field="VmRSS:"):
    return proc_kib(pid, "status", field)


def pss_kib(pid):
    return proc_kib(pid, "smaps_rollup", "Pss:")


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def tree_pids(root):
    """`root` and every process below it (walking parent pids in /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_mem_kib(root):
    pids = tree_pids(root)
    return {"processes": len(pids), "rss_kib": sum(rss_kib(p) for p in pids),
            "pss_kib": sum(pss_kib(p) for p in pids)}


# A handler agent: the minimal valid package (agent.yaml + src/main.py).
AGENT_YAML = """name: {name}
display_name: {name}
description: {desc}
version: '1.0'
entrypoint: src.main:handler
runtime: python3.11
capabilities: [bench]
metadata:
  version: 0.1.0
"""

SMALL_HANDLER = '''"""A tiny stdlib handler for the density row."""


def handler(context):
    return {"ok": True}
'''

CPU_HANDLER = '''"""A CPU-bound handler: a fixed pure-Python loop (~{ms:.1f} ms where calibrated)."""

N = {n}


def handler(context):
    x = 0
    for i in range(N):
        x += i * i
    return {{"n": N, "x": x & 0xFFFF}}
'''


def write_agent(path, name, desc, code):
    os.makedirs(os.path.join(path, "src"), exist_ok=True)
    with open(os.path.join(path, "agent.yaml"), "w") as f:
        f.write(AGENT_YAML.format(name=name, desc=desc))
    open(os.path.join(path, "src", "__init__.py"), "w").close()
    with open(os.path.join(path, "src", "main.py"), "w") as f:
        f.write(code)
    return path


def calibrate_loop(ms=2.0):
    """Iterations of CPU_HANDLER's loop that take `ms` in this Python (best of 5)."""
    n = 20000
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        x = 0
        for i in range(n):
            x += i * i
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return max(1000, int(n * (ms / 1000) / best))


class Supervisor:
    """One `par supervisor` on a config file of [[agents]] tables."""

    def __init__(self, par, tmp, name, agents, port_span=300):
        self.par, self.tmp, self.name = par, tmp, name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.home = os.path.join(tmp, "home")  # shared: stdlib agents need no env build
        cfg = os.path.join(tmp, f"{name}.toml")
        lo = WORKER_PORTS_LO
        lines = [f'[supervisor]\nport = {self.port}\nworker_ports = "{lo}-{lo + port_span}"\n']
        for a in agents:
            lines.append("[[agents]]")
            for k, v in a.items():
                lines.append(f"{k} = {json.dumps(v)}")
            lines.append("")
        with open(cfg, "w") as f:
            f.write("\n".join(lines))
        env = dict(os.environ, PAR_HOME=self.home, PAR_LOG="warn")
        env.pop("PAR_ADMIN_TOKEN", None)
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([par, "supervisor", "--config", cfg], env=env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        token_file = os.path.join(self.home, "run", f"supervisor-{self.port}.token")
        ok = wait_for(lambda: self.proc.poll() is not None or
                      (os.path.exists(token_file) and http("GET", f"{self.base}/supervisor/health")[0] is not None),
                      30, 0.02)
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"supervisor {name} did not start; see {self.log_path}")
        with open(token_file) as f:
            self.token = f.read().strip()

    def status(self):
        s, b = http("GET", f"{self.base}/supervisor/status", timeout=10, token=self.token)
        return json.loads(b) if s == 200 else None

    def agents(self):
        """Agents by id from /supervisor/status (its processes kept in self.procs)."""
        st = self.status()
        if not st:
            return {}
        self.procs = st.get("processes", [])
        a = st.get("agents")
        if isinstance(a, dict):
            return a
        return {x["agent_id"]: x for x in a or []}

    def processes(self):
        st = self.status()
        return st.get("processes", []) if st else []

    def wait_agents(self, pred, timeout, what):
        """Polls status until pred(agents by id) holds; raises after `timeout`."""
        last = {}

        def check():
            nonlocal last
            last = self.agents()
            return last and pred(last)
        if not wait_for(check, timeout, 0.25):
            states = {}
            for a in last.values():
                states[a.get("state")] = states.get(a.get("state"), 0) + 1
            raise RuntimeError(f"{self.name}: {what} not reached in {timeout:.0f} s (states: {states}); see {self.log_path}")

    def stop(self):
        pids = tree_pids(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Anything of its tree still there (it should have stopped them) goes too.
        time.sleep(0.2)
        for pid in pids:
            if pid != self.pid and os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.log_file.close()


# ---------------------------------------------------------------- row 1

def row_wake(par, tmp, reps):
    agent = write_agent(os.path.join(tmp, "agents", "small"), "small", "A tiny stdlib handler.", SMALL_HANDLER)
    sup = Supervisor(par, tmp, "wake", [{"id": "wake", "package": agent, "idle_timeout": "1s"}])
    try:
        url = f"{sup.base}/agents/wake/invoke"
        times, idle_waits = [], []
        for i in range(reps):
            t_idle = time.monotonic()

            def idle_now(agents):
                if agents.get("wake", {}).get("state") != "idle":
                    return False
                return all(p.get("pid") is None for p in sup.procs if p.get("agent_id") == "wake")
            sup.wait_agents(idle_now, 60, "wake idle (no pid)")
            idle_waits.append(time.monotonic() - t_idle)
            t0 = time.monotonic()
            s, b = http("POST", url, {"action": "ping", "data": {}}, timeout=60)
            dt = time.monotonic() - t0
            if s != 200:
                raise RuntimeError(f"wake request answered {s}: {b[:300]!r}")
            times.append(dt)
            log(f"wake {i + 1}/{reps}: {dt * 1000:.0f} ms (idle after {idle_waits[-1]:.1f} s)")
        return {"median_s": statistics.median(times), "all_s": times, "idle_wait_s": idle_waits}
    finally:
        sup.stop()


# ---------------------------------------------------------------- row 2

class BusyLoop:
    """Keeps agents busy: one thread per agent, a keep-alive POST /invoke every `gap` s."""

    def __init__(self, port, agents, gap=0.1):
        self.stop_ev = threading.Event()
        self.ok = self.err = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(port, a, gap), daemon=True) for a in agents]
        for t in self.threads:
            t.start()

    def loop(self, port, agent, gap):
        conn = None
        body = json.dumps({"action": "ping", "data": {}})
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", f"/agents/{agent}/invoke", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.err += 1
            except (OSError, httpclient.HTTPException):
                with self.lock:
                    self.err += 1
                conn = None
                time.sleep(0.05)
            self.stop_ev.wait(gap)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=35)


def row_density(par, tmp, n, busy=5):
    agent = write_agent(os.path.join(tmp, "agents", "small"), "small", "A tiny stdlib handler.", SMALL_HANDLER)
    ids = [f"a{i:03d}" for i in range(n)]
    busy_ids = ids[:busy]
    out = {"agents": n, "busy": busy}
    for mode in ("idle_timeout", "always_on"):
        specs = []
        for aid in ids:
            spec = {"id": aid, "package": agent}
            if mode == "idle_timeout":
                spec["idle_timeout"] = "5s"
            specs.append(spec)
        t0 = time.monotonic()
        sup = Supervisor(par, tmp, f"density-{mode}", specs, port_span=max(300, 2 * n + 50))
        loop = None
        try:
            # Every agent comes up once (declared agents start at boot).
            peak = {"rss_kib": 0}

            def all_ready(agents):
                m = tree_mem_kib(sup.pid)
                if m["rss_kib"] > peak["rss_kib"]:
                    peak.update(m)
                return len(agents) >= n and all(a.get("ready_replicas", 0) >= 1 or a.get("state") == "idle"
                                                for a in agents.values())
            sup.wait_agents(all_ready, 300, f"{n} agents up")
            started_s = time.monotonic() - t0
            loop = BusyLoop(sup.port, busy_ids)
            if mode == "idle_timeout":
                sup.wait_agents(lambda a: sum(1 for x in a.values() if x.get("state") == "idle") >= n - busy
                                and all(a[b].get("state") == "ready" for b in busy_ids), 120,
                                f"{n - busy} idle, {busy} ready")
            else:
                sup.wait_agents(lambda a: sum(1 for x in a.values() if x.get("state") == "ready") >= n, 120,
                                f"{n} ready")
            settled_s = time.monotonic() - t0
            time.sleep(3)  # the busy loop's steady state
            samples = []
            for _ in range(3):
                samples.append(tree_mem_kib(sup.pid))
                time.sleep(1)
            agents = sup.agents()
            states = {}
            for a in agents.values():
                states[a.get("state")] = states.get(a.get("state"), 0) + 1
            loop.stop()
            m = {k: int(statistics.median(s[k] for s in samples)) for k in ("rss_kib", "pss_kib", "processes")}
            m.update({"supervisor_rss_kib": rss_kib(sup.pid), "states": states, "started_s": round(started_s, 1),
                      "settled_s": round(settled_s, 1), "busy_requests_ok": loop.ok, "busy_requests_err": loop.err,
                      "peak_rss_while_starting_kib": peak["rss_kib"]})
            loop = None
            out[mode] = m
            log(f"density {mode}: {n} agents, tree RSS {m['rss_kib'] / 1024:.0f} MiB (PSS {m['pss_kib'] / 1024:.0f} MiB), "
                f"{m['processes']} processes, states {states}, up in {started_s:.1f} s")
        finally:
            if loop:
                loop.stop()
            sup.stop()
    return out


# ---------------------------------------------------------------- row 3

def parse_wrk(out):
    import re

    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s|m)", s)
        v, u = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = dur(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    res["errors"] = errs
    return res


def load_post(url, body, conns, duration, tmp):
    """POST `body` to `url` on `conns` keep-alive connections for `duration` s."""
    if shutil.which("wrk"):
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
            f.write(f"wrk.body = {json.dumps(body)}\n")
        cmd = ["wrk", "-t", "2", "-c", str(conns), "-d", f"{duration}s", "--latency", "-s", script, url]
        r = parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout)
        r["client"] = "wrk"
        return r
    # A thread pool of http.client keep-alive connections.
    host_port, path = url.split("://", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    lat, errs = [], [0]
    lock = threading.Lock()
    end = time.monotonic() + duration

    def worker():
        conn = httpclient.HTTPConnection(host, int(port), timeout=30)
        mine = []
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/" + path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    mine.append((time.perf_counter() - t0) * 1000)
                else:
                    errs[0] += 1
            except (OSError, httpclient.HTTPException):
                errs[0] += 1
                conn = httpclient.HTTPConnection(host, int(port), timeout=30)
        with lock:
            lat.extend(mine)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    return {"rps": len(lat) / took, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "requests": len(lat), "errors": errs[0], "client": "python threads"}


def row_cpu(par, tmp, duration, conns=8):
    n = calibrate_loop(2.0)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        x = 0
        for i in range(n):
            x += i * i
        runs.append((time.perf_counter() - t0) * 1000)
    ms = min(runs)
    agent = write_agent(os.path.join(tmp, "agents", "cpu"), "cpu", "A CPU-bound handler.", CPU_HANDLER.format(n=n, ms=ms))
    sup = Supervisor(par, tmp, "cpu", [{"id": "cpu1", "package": agent, "replicas": 1},
                                       {"id": "cpu2", "package": agent, "replicas": 2}])
    try:
        sup.wait_agents(lambda a: a.get("cpu1", {}).get("ready_replicas") == 1 and a.get("cpu2", {}).get("ready_replicas") == 2,
                        60, "cpu1 and cpu2 ready")
        body = json.dumps({"action": "work", "data": {}})
        out = {"loop_iterations": n, "handler_ms_here": round(ms, 2), "connections": conns, "duration_s": duration}
        # One request alone: the handler's own time plus the hop.
        for aid in ("cpu1", "cpu2"):
            s, b = http("POST", f"{sup.base}/agents/{aid}/invoke", {"action": "work", "data": {}}, timeout=30)
            if s != 200:
                raise RuntimeError(f"{aid} answered {s}: {b[:300]!r}")
        single = []
        for _ in range(20):
            t1 = time.perf_counter()
            http("POST", f"{sup.base}/agents/cpu1/invoke", {"action": "work", "data": {}}, timeout=30)
            single.append((time.perf_counter() - t1) * 1000)
        out["single_request_ms"] = round(statistics.median(single), 2)
        for aid in ("cpu1", "cpu2"):
            url = f"{sup.base}/agents/{aid}/invoke"
            load_post(url, body, conns, 1, tmp)  # warm-up
            r = load_post(url, body, conns, duration, tmp)
            out[aid] = r
            log(f"cpu {aid}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']} ({r['client']})")
        out["ratio"] = out["cpu2"]["rps"] / out["cpu1"]["rps"] if out["cpu1"]["rps"] else None
        return out
    finally:
        sup.stop()


# ---------------------------------------------------------------- row 4

async def sse_streams(port, path, n, rate, hold_s, sup_pid, phase_limit):
    """Opens `n` SSE streams at `rate` per second, holds them `hold_s` s, closes them."""
    ttfe, errors = [], {}
    events = [0]
    stop = asyncio.Event()
    firsts = [0]
    all_first = asyncio.Event()
    writers = []

    def err(kind):
        errors[kind] = errors.get(kind, 0) + 1

    async def one():
        t0 = time.perf_counter()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
        except (OSError, asyncio.TimeoutError) as e:
            err(f"connect: {type(e).__name__}")
            return
        writers.append(w)
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
            buf = b""
            while b"event: tick" not in buf:
                data = await asyncio.wait_for(r.read(65536), 30)
                if not data:
                    err("closed before the first event")
                    return
                buf += data
            if not buf.startswith(b"HTTP/1.1 200"):
                err(f"status {buf[:12]!r}")
                return
            ttfe.append((time.perf_counter() - t0) * 1000)
            events[0] += buf.count(b"event: tick")
            firsts[0] += 1
            if firsts[0] + sum(errors.values()) >= n:
                all_first.set()
            tail = b""
            while not stop.is_set():
                data = await r.read(65536)
                if not data:
                    if not stop.is_set():
                        err("closed early")
                    return
                chunk = tail + data
                events[0] += chunk.count(b"event: tick")
                tail = chunk[-16:]
                events[0] -= tail.count(b"event: tick")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            err(type(e).__name__)
        finally:
            if firsts[0] + sum(errors.values()) >= n:
                all_first.set()

    started = time.monotonic()
    cpu0 = proc_cpu_seconds(sup_pid), os.times()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one()))
        # a fixed rate: stream i starts at i / rate seconds
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    opened_s = time.monotonic() - started
    try:
        await asyncio.wait_for(all_first.wait(), max(5.0, phase_limit - opened_s - hold_s))
    except asyncio.TimeoutError:
        pass
    all_first_s = time.monotonic() - started
    ev0 = events[0]
    t_hold = time.monotonic()
    samples = []
    while time.monotonic() - t_hold < hold_s:
        await asyncio.sleep(1.0)
        samples.append((rss_kib(sup_pid), tree_mem_kib(sup_pid)["rss_kib"]))
    held = time.monotonic() - t_hold
    t1 = os.times()
    sup_cpu = proc_cpu_seconds(sup_pid) - cpu0[0]
    client_cpu = (t1.user + t1.system) - (cpu0[1].user + cpu0[1].system)
    phase_s = time.monotonic() - started
    ev_hold = events[0] - ev0
    open_streams = firsts[0] - sum(v for k, v in errors.items() if k == "closed early")
    stop.set()
    for w in writers:
        try:
            w.close()
        except Exception:
            pass
    await asyncio.wait(tasks, timeout=10)
    for t in tasks:
        t.cancel()
    return {"streams": n, "rate_per_s": rate, "opened_in_s": round(opened_s, 2),
            "first_events": firsts[0], "all_first_in_s": round(all_first_s, 2),
            "ttfe_p50_ms": pct(ttfe, 50), "ttfe_p99_ms": pct(ttfe, 99), "ttfe_max_ms": max(ttfe) if ttfe else None,
            "errors": errors, "hold_s": round(held, 1), "events_during_hold": ev_hold,
            "events_per_stream_per_s": round(ev_hold / max(1, open_streams) / held, 2) if held else None,
            "phase_s": round(phase_s, 1), "supervisor_cpu_s": round(sup_cpu, 2), "client_cpu_s": round(client_cpu, 2),
            "supervisor_rss_during_kib": max(s[0] for s in samples) if samples else None,
            "tree_rss_during_kib": max(s[1] for s in samples) if samples else None}


def row_sse(par, tmp, n, rate, hold_s=10, phase_limit=60):
    sup = Supervisor(par, tmp, "sse", [{"id": "ticker", "package": TICKER_AGENT}])
    try:
        sup.wait_agents(lambda a: a.get("ticker", {}).get("state") == "ready", 60, "ticker ready")
        path = "/agents/ticker/events?n=100000&gap_ms=1000&pad=0"
        # one stream alone first (warms the route and the host)
        s, _ = http("GET", f"{sup.base}/agents/ticker/events?n=1&pad=0", timeout=10)
        if s != 200:
            raise RuntimeError(f"ticker stream answered {s}")
        time.sleep(1.0)
        before = rss_kib(sup.pid)
        tree_before = tree_mem_kib(sup.pid)["rss_kib"]
        r = asyncio.run(sse_streams(sup.port, path, n, rate, hold_s, sup.pid, phase_limit))
        time.sleep(2.0)
        r["supervisor_rss_before_kib"] = before
        r["supervisor_rss_after_close_kib"] = rss_kib(sup.pid)
        r["tree_rss_before_kib"] = tree_before
        during = r["supervisor_rss_during_kib"]
        r["supervisor_rss_per_stream_kib"] = (during - before) / r["first_events"] if during and r["first_events"] else None
        s, _ = http("GET", f"{sup.base}/agents/ticker/health", timeout=10)
        r["health_after"] = s
        log(f"sse {n}: first events {r['first_events']}, ttfe p50 {r['ttfe_p50_ms']} ms p99 {r['ttfe_p99_ms']} ms, "
            f"supervisor RSS {before / 1024:.1f} -> {(during or 0) / 1024:.1f} MiB, errors {r['errors']}")
        return r
    finally:
        sup.stop()


# ---------------------------------------------------------------- report

def report(r):
    m = r["machine"]
    print(f"\nreplicas and scale to zero ({m['nproc']} cores, load average {m['loadavg_at_start']:.2f} at start, "
          f"{m['loadavg_at_end']:.2f} at end{', quick' if r['quick'] else ''})\n")
    if "wake" in r:
        w = r["wake"]
        if "error" in w:
            print(f"wake from zero                 FAILED: {w['error']}")
        else:
            print(f"wake from zero (median of {len(w['all_s'])})    {w['median_s'] * 1000:.0f} ms  (goal <= 300 ms; all: "
                  f"{', '.join(f'{x * 1000:.0f}' for x in w['all_s'])})")
    if "density" in r:
        d = r["density"]
        if "error" in d:
            print(f"density                        FAILED: {d['error']}")
        else:
            i, a = d["idle_timeout"], d["always_on"]
            print(f"density, {d['agents']} agents, {d['busy']} busy:")
            for name, x in (("with idle_timeout", i), ("always on", a)):
                print(f"  {name:18} tree RSS {x['rss_kib'] / 1024:7.0f} MiB  PSS {x['pss_kib'] / 1024:6.0f} MiB  "
                      f"{x['processes']:4} processes  supervisor {x['supervisor_rss_kib'] / 1024:.1f} MiB  "
                      f"states {x['states']}  (up in {x['started_s']} s)")
            print(f"  idle/always-on     RSS {i['rss_kib'] / a['rss_kib']:.3f}  PSS {i['pss_kib'] / max(1, a['pss_kib']):.3f}  "
                  f"(per agent always on: {a['rss_kib'] / d['agents'] / 1024:.1f} MiB RSS)")
    if "cpu" in r:
        c = r["cpu"]
        if "error" in c:
            print(f"CPU-bound handler              FAILED: {c['error']}")
        else:
            print(f"CPU-bound handler (~{c['handler_ms_here']:.1f} ms loop, one request alone {c['single_request_ms']:.1f} ms), "
                  f"{c['connections']} connections, {c['duration_s']} s, {c['cpu1']['client']}:")
            for aid, label in (("cpu1", "replicas 1"), ("cpu2", "replicas 2")):
                x = c[aid]
                p50 = f"{x['p50_ms']:.1f}" if x["p50_ms"] is not None else "-"
                p99 = f"{x['p99_ms']:.1f}" if x["p99_ms"] is not None else "-"
                print(f"  {label}   {x['rps']:7.0f} req/s  p50 {p50} ms  p99 {p99} ms  errors {x['errors']}")
            print(f"  ratio        {c['ratio']:.2f}x  (goal >= 1.6x on 2 cores)" if c["ratio"] else "  ratio -")
    if "sse" in r:
        s = r["sse"]
        if "error" in s:
            print(f"SSE streams                    FAILED: {s['error']}")
        else:
            per = s["supervisor_rss_per_stream_kib"]
            print(f"SSE, {s['streams']} streams through the supervisor (opened at {s['rate_per_s']}/s in {s['opened_in_s']} s, "
                  f"all first events by {s['all_first_in_s']} s):")
            print(f"  time to first event  p50 {s['ttfe_p50_ms']:.1f} ms  p99 {s['ttfe_p99_ms']:.1f} ms  max {s['ttfe_max_ms']:.1f} ms"
                  if s["ttfe_p50_ms"] is not None else "  time to first event -")
            print(f"  supervisor RSS       before {s['supervisor_rss_before_kib'] / 1024:.1f} MiB, during "
                  f"{(s['supervisor_rss_during_kib'] or 0) / 1024:.1f} MiB, after close {s['supervisor_rss_after_close_kib'] / 1024:.1f} MiB"
                  + (f"; {per:.1f} KiB per stream" if per is not None else ""))
            print(f"  task RSS             before {s['tree_rss_before_kib'] / 1024:.1f} MiB, during {(s['tree_rss_during_kib'] or 0) / 1024:.1f} MiB "
                  f"(supervisor + worker + Python host)")
            print(f"  CPU over the {s['phase_s']} s phase: supervisor {s['supervisor_cpu_s']} s, this client {s['client_cpu_s']} s")
            print(f"  streams with a first event {s['first_events']}/{s['streams']}, events held {s['events_per_stream_per_s']}/stream/s "
                  f"over {s['hold_s']} s, errors {s['errors'] or 0}, health after {s['health_after']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--par", help="par binary to run (default: build the release one)")
    ap.add_argument("--quick", action="store_true", help="20 agents, 200 streams, 3 s load phases, 3 wakes")
    ap.add_argument("--json", help="write the results as JSON to this file")
    ap.add_argument("--rows", default="1,2,3,4", help="which rows to run (default 1,2,3,4)")
    ap.add_argument("--sse-rate", type=float, default=250, help="SSE streams opened per second (default 250)")
    args = ap.parse_args()
    rows = {x.strip() for x in args.rows.split(",")}

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    streams = 200 if args.quick else 2000
    if nofile < streams + 200:
        log(f"open-files limit {nofile}: {nofile - 200} streams instead of {streams}")
        streams = max(10, nofile - 200)

    par = os.path.abspath(args.par) if args.par else build_par()
    results = {"machine": {"nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()[0]},
               "par": par, "quick": args.quick, "nofile": nofile,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="par-scale-") as tmp:
        os.chmod(tmp, 0o755)  # agents under their own uids read their packages from a staged copy
        plan = [("1", "wake", lambda: row_wake(par, tmp, 3 if args.quick else 5)),
                ("2", "density", lambda: row_density(par, tmp, 20 if args.quick else 100)),
                ("3", "cpu", lambda: row_cpu(par, tmp, 3 if args.quick else 10)),
                ("4", "sse", lambda: row_sse(par, tmp, streams, args.sse_rate))]
        for key, name, fn in plan:
            if key not in rows:
                continue
            log(f"row {key}: {name}")
            try:
                results[name] = fn()
            except Exception as e:  # a failed row is reported, the others still run
                log(f"row {key} ({name}) failed: {e}")
                results[name] = {"error": str(e)}
    results["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
