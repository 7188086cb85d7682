"""nginx on 127.0.0.1 standing in for the Application Load Balancer: round
robin over the registered targets, target health checks, registration and
deregistration with draining, and the target group's stickiness (lb_cookie).

Open-source nginx has only passive health checks (max_fails), which react to
failed requests rather than probe. The ALB probes: so does this one, with a
checker thread that GETs each target's health path every `interval` and
moves targets in and out of rotation (a regenerated upstream block and a
graceful `nginx -s reload`) after the target group's healthy/unhealthy
thresholds. nginx itself neither retries another target nor marks one down
(`proxy_next_upstream off`, `max_fails=0`), as the ALB does not retry.

Stickiness, as the ALB's `lb_cookie` (Terraform `stickiness` on the target
group, variables alb_stickiness / alb_stickiness_duration): a request without
a valid `AWSALB` cookie is balanced round robin and its answer sets
`AWSALB=<opaque id of the target>; Max-Age=<duration>; Path=/`; a request
whose cookie names a target in rotation goes to that target, and its answer
renews the cookie; a cookie naming a target out of rotation (unhealthy,
draining, gone) or nothing known is ignored: the request is balanced and
re-cookied. Open-source nginx has no `sticky` directive: a `map` of the
cookie to one upstream per target in rotation (else the round-robin
upstream) picks the upstream, and a `map` of `$upstream_addr` to the
target's id writes the cookie. (The ALB's cookie is encrypted and carries
an `Expires=` date, the duration being checked by the ALB; nginx cannot
write a date into a header, so the stand-in states the duration as
`Max-Age`, renewed on every answer. The ALB's `AWSALBCORS` twin, for
cross-origin browsers, is left out.)

Every answer carries `X-Alb-Generation` (the configuration that routed it),
`X-Alb-Target` and `X-Alb-Routed` (`cookie` when the stickiness cookie chose
the target, `balanced` otherwise), so a caller can tell which requests were
routed after a target left rotation, and how.
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from podman_host import REPO, run, say
from task import request, wait_until

TERRAFORM_ALB = REPO / "deploy" / "terraform" / "alb.tf"
TERRAFORM_VARIABLES = REPO / "deploy" / "terraform" / "variables.tf"
COOKIE = "AWSALB"


def variable_default(name: str) -> str:
    """The default of `variable "name"` in variables.tf, as written."""
    text = TERRAFORM_VARIABLES.read_text()
    m = re.search(rf'^variable\s+"{name}"\s*{{(.*?)^}}', text, re.M | re.S)
    d = m and re.search(r"^\s*default\s*=\s*(\S+)", m[1], re.M)
    if not d:
        raise SystemExit(f"{TERRAFORM_VARIABLES}: no variable {name} with a default")
    return d[1]


def stickiness_settings(text: str) -> tuple[bool, int]:
    """(enabled, cookie_duration) of the target group's `stickiness` block,
    with `var.X` resolved to the variable's default."""
    m = re.search(r"^\s*stickiness\s*{(.*?)}", text, re.M | re.S)
    if not m:
        return False, 0
    block = m[1]

    def value(key: str) -> str:
        v = re.search(rf"^\s*{key}\s*=\s*(\S+)", block, re.M)
        if not v:
            raise SystemExit(f"{TERRAFORM_ALB}: stickiness without {key}")
        return variable_default(v[1][4:]) if v[1].startswith("var.") else v[1]

    if value("type") != '"lb_cookie"':
        raise SystemExit(f"{TERRAFORM_ALB}: the stand-in knows stickiness type lb_cookie only")
    return value("enabled") == "true", int(value("cookie_duration"))


def target_group_settings() -> dict[str, int]:
    """health_check, deregistration_delay and stickiness of the Terraform
    target group (variables at their defaults)."""
    text = TERRAFORM_ALB.read_text()
    out = {}
    for key in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold", "deregistration_delay"):
        m = re.search(rf"^\s*{key}\s*=\s*(\d+)", text, re.M)
        if not m:
            raise SystemExit(f"{TERRAFORM_ALB}: no {key} = N")
        out[key] = int(m[1])
    out["path"] = re.search(r'^\s*path\s*=\s*"([^"]+)"', text, re.M)[1]
    out["stickiness"], out["cookie_duration"] = stickiness_settings(text)
    return out


@dataclass
class Target:
    port: int
    state: str = "initial"  # initial, healthy, unhealthy, draining
    ok_streak: int = 0
    fail_streak: int = 0
    marked_down_generation: int | None = None
    # The AWSALB value naming this target: opaque, new at each registration.
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))


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

    @property
    def sticky(self) -> bool:
        return bool(self.settings.get("stickiness"))

    def write_config(self) -> None:
        w = self.work
        rotation = self.in_rotation()
        servers = [f"server 127.0.0.1:{t.port} max_fails=0;  # {n}" for n, t in rotation]
        # An ALB with no healthy target answers 503; an empty upstream is not valid nginx.
        servers = servers or ["server 127.0.0.1:9 down;"]
        # Stickiness: one upstream per target in rotation, chosen by its cookie;
        # `proxy_pass http://$alb_upstream` finds these names among the upstreams.
        sticky_upstreams, by_cookie, cookie_of = [], [], []
        if self.sticky:
            for n, t in rotation:
                sticky_upstreams.append(f"upstream target_{n} {{ server 127.0.0.1:{t.port} max_fails=0; }}")
                by_cookie.append(f'"{t.cookie}" target_{n};')
                cookie_of.append(
                    f'"127.0.0.1:{t.port}" "{COOKIE}={t.cookie}; Max-Age={self.settings["cookie_duration"]}; Path=/";')
        nl = "\n        "
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
    {chr(10).join("    " + u for u in sticky_upstreams).strip()}
    # lb_cookie stickiness ({"on, " + str(self.settings.get("cookie_duration")) + " s" if self.sticky else "off"}).
    map $cookie_{COOKIE} $alb_upstream {{
        default tasks;
        {nl.join(by_cookie)}
    }}
    map $alb_upstream $alb_routed {{
        tasks balanced;
        default cookie;
    }}
    map $upstream_addr $alb_set_cookie {{
        default "";
        {nl.join(cookie_of)}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://$alb_upstream;
            proxy_next_upstream off;
            proxy_connect_timeout {self.settings['timeout']}s;
            proxy_read_timeout 60s;
            add_header X-Alb-Generation {self.generation} always;
            add_header X-Alb-Target $upstream_addr always;
            add_header X-Alb-Routed $alb_routed always;
            add_header Set-Cookie $alb_set_cookie always;
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


def http_headers(url: str, timeout: float = 5, cookie: str = "") -> tuple[int, bytes, dict[str, str]]:
    """GET with a new connection (and a Cookie header if given); (status, body,
    headers); status 0 without an answer."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path or "/", headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    except OSError:
        return 0, b"", {}
    finally:
        conn.close()
