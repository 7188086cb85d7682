#!/usr/bin/env python3
"""What one proxied request costs the proxy, in user-space instructions:
PAR's supervisor beside nginx, each run under valgrind's callgrind.

Throughput on this kind of machine (2 shared cores) moves by 20-30 % from
run to run; instruction counts do not: the same binary and the same
requests give the same count whatever else the machine is doing. So this
is the figure to compare two builds by, or PAR with nginx.

For each proxy: start it under callgrind in front of one echo worker (the
supervisor's own; nginx proxies to that same worker), send a warm-up, zero
the counters, send N and then 3N requests over 8 keep-alive connections,
and dump the counters after each. (count(3N) - count(N)) / 2N is the cost
of one request, without start-up and connection set-up. Kernel time (the
socket calls, the wake-ups) is not counted: both proxies make the same four
socket calls per request (read client, write worker, read worker, write
client), measured with strace.

Usage: bench/proxy_cost.py [--par BINARY] [-n N] [--conns C] [--no-nginx]
Needs valgrind (Debian: valgrind) and nginx; takes about a minute.
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

from benchlib import NGINX_CONF, ROOT, free_port, wait_for

AGENT = "echo"
INVOKE = json.dumps({"action": "echo", "data": {"text": "x" * 150}})


def log(msg):
    print(f"proxy_cost: {msg}", file=sys.stderr, flush=True)


def load(port, path, n, conns=8):
    """`n` requests over `conns` keep-alive connections; the count of non-200 answers."""
    errors = []

    def run(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(k):
            if path.endswith("/invoke"):
                c.request("POST", path, INVOKE, {"Content-Type": "application/json"})
            else:
                c.request("GET", path)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)

    threads = [threading.Thread(target=run, args=(n // conns,)) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(errors)


def answers(port, path):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        return c.getresponse().status == 200
    except OSError:
        return False


class Callgrind:
    """A command under callgrind whose counters can be zeroed and dumped."""

    def __init__(self, cmd, out_dir, env=None):
        self.out = os.path.join(out_dir, "cg.out")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *cmd],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, "valgrind.log"), "w"))

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dump(self):
        """Dumps the counters since the last dump; the instructions counted."""
        before = set(glob.glob(self.out + ".*"))
        self.control("-d")
        new = wait_for(lambda: set(glob.glob(self.out + ".*")) - before, 30)
        if not new:
            raise SystemExit("callgrind wrote no dump")
        with open(new.pop()) as f:
            m = re.search(r"^summary: (\d+)", f.read(), re.M)
        return int(m.group(1))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def per_request(cg, port, path, n, conns):
    """Instructions per request: the marginal cost between n and 3n requests."""
    if load(port, path, 50, conns):
        raise SystemExit(f"{path} failed during the warm-up")
    cg.dump()
    errs = load(port, path, n, conns)
    small = cg.dump()
    errs += load(port, path, 3 * n, conns)
    large = cg.dump()
    if errs:
        raise SystemExit(f"{errs} requests to {path} failed")
    return (large - small) / (2 * n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--par", help="par binary (default: build the release one)")
    ap.add_argument("-n", type=int, default=800, help="requests in the smaller batch (default 800)")
    ap.add_argument("--conns", type=int, default=8,
                    help="keep-alive connections the requests share (default 8; 1: one request at a time)")
    ap.add_argument("--no-nginx", action="store_true", help="measure PAR only")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control") + (() if args.no_nginx else ("nginx",)):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is needed (Debian: apt-get install valgrind nginx)")
    par = args.par
    if not par:
        log("building par (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "par"], cwd=ROOT, check=True)
        par = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "par")
    paths = ("/health", "/invoke")
    result = {}
    with tempfile.TemporaryDirectory(prefix="par-cost-") as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        cfg = os.path.join(tmp, "cost.toml")
        with open(cfg, "w") as f:
            f.write(f'[supervisor]\nport = {port}\nworker_ports = "18501-18600"\n\n'
                    f'[[agents]]\nid = "{AGENT}"\npackage = "{os.path.join(ROOT, "examples", "agents", AGENT)}"\n')
        # Under valgrind the agents keep the supervisor's uid (a uid change is
        # not what is measured here).
        env = dict(os.environ, PAR_HOME=os.path.join(tmp, "home"), PAR_LOG="warn", PAR_AGENT_UIDS="off")
        sup = Callgrind([par, "supervisor", "--config", cfg], tmp, env)
        try:
            if not wait_for(lambda: answers(port, f"/agents/{AGENT}/health"), 120, 0.2):
                raise SystemExit("the supervisor under valgrind did not route the echo agent")
            for p in paths:
                result[f"par{p}"] = per_request(sup, port, f"/agents/{AGENT}{p}", args.n, args.conns)
                log(f"PAR   {p:8} {result[f'par{p}']:>9.0f} instructions per request")
            if not args.no_nginx:
                worker = worker_port(port)
                result.update(measure_nginx(tmp, worker, paths, args.n, args.conns))
        finally:
            sup.stop()
    print(f"\nuser-space instructions per proxied request (callgrind; {args.n}/{3 * args.n} requests, {args.conns} connections)")
    print(f"{'request':10} {'PAR':>10} {'nginx':>10} {'PAR/nginx':>10}")
    for p in paths:
        ng = result.get(f"nginx{p}")
        ratio = f"{result[f'par{p}'] / ng:.2f}" if ng else "-"
        print(f"{p:10} {result[f'par{p}']:>10.0f} {f'{ng:.0f}' if ng else '-':>10} {ratio:>10}")
    print(json.dumps(result))


def worker_port(sup_port):
    c = http.client.HTTPConnection("127.0.0.1", sup_port, timeout=5)
    c.request("GET", "/supervisor/processes")
    data = json.loads(c.getresponse().read())
    procs = data["processes"] if isinstance(data, dict) else data
    return next(p["port"] for p in procs if p["agent_id"] == AGENT)




def measure_nginx(tmp, upstream, paths, n, conns):
    """nginx as bench/run configures it (one process here: callgrind follows no forks)."""
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        conf_text = NGINX_CONF.replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;")
        f.write(conf_text.format(dir=d, upstream=upstream, port=port, agent=AGENT))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cg = Callgrind([nginx, "-c", conf, "-p", d], d)
    out = {}
    try:
        if not wait_for(lambda: answers(port, f"/agents/{AGENT}/health"), 60, 0.2):
            raise SystemExit("nginx under valgrind did not answer")
        for p in paths:
            out[f"nginx{p}"] = per_request(cg, port, f"/agents/{AGENT}{p}", n, conns)
            log(f"nginx {p:8} {out[f'nginx{p}']:>9.0f} instructions per request")
    finally:
        cg.stop()
    return out


if __name__ == "__main__":
    main()
