"""What the Python benchmarks share: ports, waiting, percentiles, /proc readers,
callgrind runs."""

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.01):
    """Polls `pred` until it returns something true (returned) or `timeout` s pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None


def pct(xs, p):
    """The p-th percentile of `xs`, interpolated between ranks; None when empty."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def proc_kib(pid, file, field):
    """A `Field: N kB` line of /proc/<pid>/<file> in KiB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


# nginx as a keep-alive reverse proxy to one worker, as the benchmarks compare it.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream worker {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /agents/{agent}/ {{
      proxy_pass http://worker/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


class Callgrind:
    """A command under callgrind whose counters can be zeroed and dumped, each
    thread's apart. `marker`: a function name that picks the threads counted
    (those that ran it since the last dump; all threads when none did)."""

    def __init__(self, cmd, out_dir, env=None, marker=None, apart=None):
        self.out = os.path.join(out_dir, "cg.out")
        self.marker = marker
        # {name: marker}: threads summed apart, not counted (the exporter's).
        self.apart = apart or {}
        self.last = {}
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={self.out}", *cmd],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, "valgrind.log"), "w"))

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dump(self, keep=None):
        """Dumps the counters since the last dump: (instructions of the threads
        counted, of all threads). `keep`: a path prefix the counted threads'
        dumps are copied to (for callgrind_annotate)."""
        before = set(glob.glob(self.out + ".*"))
        self.control("-d")
        seen = {}

        def whole():
            # Every thread's file, each ended by its totals line, none new since the last look.
            new = set(glob.glob(self.out + ".*")) - before
            texts = {f: read(f) for f in new}
            if not new or not all(re.search(r"^totals: \d+", t, re.M) for t in texts.values()):
                return None
            if set(seen) != new:
                seen.clear()
                seen.update(texts)
                return None
            return texts

        texts = wait_for(whole, 30, 0.2)
        if not texts:
            raise SystemExit("callgrind wrote no dump")
        counts = {f: int(re.search(r"^totals: (\d+)", t, re.M).group(1)) for f, t in texts.items()}
        counted = [f for f, t in texts.items() if self.marker and self.marker in t]
        if self.marker and not counted:
            print(f"callgrind: no thread ran {self.marker}: all threads counted", file=sys.stderr, flush=True)
        counted = counted or list(texts)
        self.last = {"threads counted": len(counted), "threads": len(texts)}
        for name, marker in self.apart.items():
            self.last[name] = sum(counts[f] for f, t in texts.items() if marker in t and f not in counted)
        if keep:
            for i, f in enumerate(sorted(counted)):
                shutil.copyfile(f, f"{keep}.{i}" if len(counted) > 1 else keep)
        return sum(counts[f] for f in counted), sum(counts.values())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def read(path):
    with open(path) as f:
        return f.read()
