"""nginx on 127.0.0.1 standing in for the Application Load Balancer: round
robin over the registered targets, target health checks, registration and
deregistration with draining.

Open-source nginx has only passive health checks (max_fails), which react to
failed requests rather than probe. The ALB probes: so does this one, with a
checker thread that GETs each target's health path every `interval` and
moves targets in and out of rotation (a regenerated upstream block and a
graceful `nginx -s reload`) after the target group's healthy/unhealthy
thresholds. nginx itself neither retries another target nor marks one down
(`proxy_next_upstream off`, `max_fails=0`), as the ALB does not retry.

Every answer carries `X-Alb-Generation` (the configuration that routed it)
and `X-Alb-Target`, so a caller can tell which requests were routed after a
target left rotation.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from podman_host import REPO, run, say
from task import request, wait_until

TERRAFORM_ALB = REPO / "deploy" / "terraform" / "alb.tf"


def target_group_settings() -> dict[str, int]:
    """health_check and deregistration_delay of the Terraform target group."""
    text = TERRAFORM_ALB.read_text()
    out = {}
    for key in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold", "deregistration_delay"):
        m = re.search(rf"^\s*{key}\s*=\s*(\d+)", text, re.M)
        if not m:
            raise SystemExit(f"{TERRAFORM_ALB}: no {key} = N")
        out[key] = int(m[1])
    out["path"] = re.search(r'^\s*path\s*=\s*"([^"]+)"', text, re.M)[1]
    return out


@dataclass
class Target:
    port: int
    state: str = "initial"  # initial, healthy, unhealthy, draining
    ok_streak: int = 0
    fail_streak: int = 0
    marked_down_generation: int | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Alb:
    def __init__(self, work: Path, interval: float, settings: dict[str, int]) -> None:
        self.work = work
        self.interval = interval
        self.settings = settings
        self.port = free_port()
        self.targets: dict[str, Target] = {}
        self.generation = 0
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.events: list[tuple[float, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen:
        self.work.mkdir(parents=True, exist_ok=True)
        self.write_config()
        run(["nginx", "-t", "-q", "-c", str(self.conf)])
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "nginx.stderr", "w"),
        )
        self.wait_generation(self.generation)
        threading.Thread(target=self.check_loop, daemon=True).start()
        return self.proc

    def stop(self) -> None:
        self.stopping.set()

    @property
    def conf(self) -> Path:
        return self.work / "nginx.conf"

    def in_rotation(self) -> list[tuple[str, Target]]:
        return [(n, t) for n, t in self.targets.items() if t.state == "healthy"]

    def write_config(self) -> None:
        w = self.work
        servers = [f"server 127.0.0.1:{t.port} max_fails=0;  # {n}" for n, t in self.in_rotation()]
        # An ALB with no healthy target answers 503; an empty upstream is not valid nginx.
        servers = servers or ["server 127.0.0.1:9 down;"]
        self.conf.write_text(f"""\
# ALB stand-in for deploy/checks/ecs-rehearsal, generation {self.generation}.
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {w}/access.log;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    upstream tasks {{
        {chr(10).join("        " + s for s in servers).strip()}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://tasks;
            proxy_next_upstream off;
            proxy_connect_timeout {self.settings['timeout']}s;
            proxy_read_timeout 60s;
            add_header X-Alb-Generation {self.generation} always;
            add_header X-Alb-Target $upstream_addr always;
        }}
    }}
}}
""")

    def reload(self, why: str) -> int:
        """Applies the rotation; returns once the workers of the previous
        configuration are gone (until then they accept connections too, which
        the ALB's atomic change would not), or after the deregistration delay."""
        with self.lock:
            self.generation += 1
            gen = self.generation
            old = self.workers()
            self.write_config()
            run(["nginx", "-c", str(self.conf), "-s", "reload"])
            self.events.append((time.monotonic(), f"generation {gen}: {why}"))
            self.wait_generation(gen)
            wait_until(f"nginx workers of generation {gen - 1} gone", lambda: not (old & self.workers()),
                       self.settings["deregistration_delay"], 0.02)
        return gen

    def workers(self) -> set[int]:
        """PIDs of the nginx master's children."""
        pids = set()
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.add(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def wait_generation(self, gen: int) -> None:
        def served_by_gen():
            _, _, headers = http_headers(self.url + self.settings["path"])
            return int(headers.get("X-Alb-Generation", -1)) >= gen
        wait_until(f"nginx generation {gen}", served_by_gen, 15, 0.05)

    def register(self, name: str, port: int) -> None:
        with self.lock:
            self.targets[name] = Target(port)
        say(f"alb: registered {name} (127.0.0.1:{port}), health checks every {self.interval:g} s")

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        def in_rotation():
            with self.lock:  # held by the checker until its reload is applied
                return self.targets[name].state == "healthy"
        wait_until(f"target {name} healthy", in_rotation, timeout, 0.05)

    def deregister(self, name: str) -> int:
        """Out of rotation at once; returns the generation that no longer routes to it."""
        with self.lock:
            self.targets[name].state = "draining"
            return self.reload(f"{name} draining")

    def remove(self, name: str) -> None:
        with self.lock:
            self.targets.pop(name, None)

    def check_loop(self) -> None:
        s = self.settings
        while not self.stopping.wait(self.interval):
            with self.lock:
                targets = list(self.targets.items())
            for name, t in targets:
                if t.state == "draining":
                    continue
                status, _ = request(f"http://127.0.0.1:{t.port}{s['path']}", timeout=min(s["timeout"], self.interval))
                with self.lock:
                    if status == 200:
                        t.ok_streak, t.fail_streak = t.ok_streak + 1, 0
                        if t.state != "healthy" and t.ok_streak >= s["healthy_threshold"]:
                            t.state = "healthy"
                            self.reload(f"{name} healthy")
                    else:
                        t.ok_streak, t.fail_streak = 0, t.fail_streak + 1
                        if t.state == "healthy" and t.fail_streak >= s["unhealthy_threshold"]:
                            t.state = "unhealthy"
                            t.marked_down_generation = self.reload(f"{name} unhealthy")


def http_headers(url: str, timeout: float = 5) -> tuple[int, bytes, dict[str, str]]:
    """GET with a new connection; (status, body, headers); status 0 without an answer."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path or "/")
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    except OSError:
        return 0, b"", {}
    finally:
        conn.close()
