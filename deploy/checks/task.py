"""A task as ECS runs it, on podman: the task definition's container turned
into `podman run` arguments (environment, CPU, memory, limits, stop timeout),
its port published on 127.0.0.1 only, and HTTP calls to it that always time out.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from podman_host import REPO, run, ulimits

TASK_DEFINITION = REPO / "deploy" / "ecs" / "task-definition.json"


@dataclass
class TaskDefinition:
    """What of deploy/ecs/task-definition.json matters to running the container."""

    cpus: float
    memory_mb: int
    container_port: int
    env: dict[str, str]
    dropped_env: list[str]
    health_command: list[str]
    stop_timeout: int
    read_only: bool
    init: bool
    ulimits: dict[str, tuple[int, int]]

    @staticmethod
    def load(path: Path = TASK_DEFINITION) -> "TaskDefinition":
        doc = json.loads(path.read_text())
        c = doc["containerDefinitions"][0]
        env, dropped = {}, []
        for e in c.get("environment", []):
            # Values with placeholders (<PACKAGES_BUCKET>) need an AWS account.
            (dropped.append(e["name"]) if "<" in e["value"] else env.__setitem__(e["name"], e["value"]))
        cmd = c["healthCheck"]["command"]
        health = cmd[1:] if cmd[0] == "CMD" else ["sh", "-c", cmd[1]]
        host = ulimits()
        # podman replaces its configured default limits when any --ulimit is
        # given (and then sets nproc above the host's): pass them all.
        limits = dict(host)
        for u in c.get("ulimits", []):
            cap = host.get(u["name"], (u["softLimit"], u["hardLimit"]))[1]
            limits[u["name"]] = (min(u["softLimit"], cap), min(u["hardLimit"], cap))
        return TaskDefinition(
            cpus=int(c.get("cpu") or doc["cpu"]) / 1024,
            memory_mb=int(c.get("memory") or doc["memory"]),
            container_port=c["portMappings"][0]["containerPort"],
            env=env,
            dropped_env=dropped,
            health_command=health,
            stop_timeout=int(c.get("stopTimeout", 30)),
            read_only=bool(c.get("readonlyRootFilesystem", False)),
            init=bool(c.get("linuxParameters", {}).get("initProcessEnabled", False)),
            ulimits=limits,
        )


@dataclass
class Task:
    """One running container of the image (or one pod holding it)."""

    name: str
    port: int  # on 127.0.0.1
    container: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 10) -> tuple[int, object]:
        return request(self.base + path, timeout=timeout)

    def post(self, path: str, body: object, timeout: float = 10) -> tuple[int, object]:
        return request(self.base + path, body=body, timeout=timeout)


def run_args(td: TaskDefinition, image: str, name: str, *, env: dict[str, str] | None = None,
             volumes: list[str] = (), read_only: bool | None = None, tmpfs: list[str] = (),
             network: str | None = None, extra: list[str] = ()) -> list[str]:
    """`podman run` for the task definition's container. The container port is
    published on 127.0.0.1 with a free host port, unless the container joins
    another one's network namespace (`network="container:NAME"`), which publishes."""
    args = ["podman", "run", "-d", "--name", name]
    if network:
        args += ["--network", network]
    else:
        args += ["-p", f"127.0.0.1::{td.container_port}"]
    args += ["--cpus", f"{td.cpus:g}", "--memory", f"{td.memory_mb}m"]
    args += ["--stop-timeout", str(td.stop_timeout)]
    for k, (soft, hard) in td.ulimits.items():
        args += ["--ulimit", f"{k}={soft}:{hard}"]
    for k, v in {**td.env, **(env or {})}.items():
        args += ["-e", f"{k}={v}"]
    if td.read_only if read_only is None else read_only:
        # As readonlyRootFilesystem: no writable /tmp unless one is mounted.
        args += ["--read-only", "--read-only-tmpfs=false"]
    for t in tmpfs:
        args += ["--tmpfs", t]
    for v in volumes:
        args += ["-v", v]
    return [*args, *extra, image]


def published_port(container: str, container_port: int) -> list[tuple[str, int]]:
    """(host ip, host port) pairs the container's port is published on."""
    out = run(["podman", "port", container, f"{container_port}/tcp"]).stdout
    pairs = []
    for line in out.split():
        ip, _, port = line.rpartition(":")
        pairs.append((ip, int(port)))
    return pairs


def request(url: str, body: object = None, timeout: float = 10, headers: dict | None = None) -> tuple[int, object]:
    """GET (or POST with a JSON body); returns (status, JSON or text). Status 0
    means no HTTP answer (refused, reset, timed out)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, decode(r.read())
    except urllib.error.HTTPError as e:
        return e.code, decode(e.read())
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def decode(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def wait_until(what: str, probe, timeout: float, interval: float = 0.2):
    """Calls probe() until it returns something truthy; raises after timeout
    with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {str(last)[:300]})")
        time.sleep(interval)


def ready_agents(task: Task) -> dict[str, str]:
    """agent id -> state, from /supervisor/processes."""
    status, body = task.get("/supervisor/processes", timeout=5)
    if status != 200 or not isinstance(body, dict):
        return {}
    return {p["agent_id"]: p["state"] for p in body.get("processes", [])}


def registry_error(task: Task) -> str | None:
    """The registry's last error as /supervisor/status shows it, if any."""
    status, body = task.get("/supervisor/status", timeout=5)
    if status != 200 or not isinstance(body, dict):
        return None
    registry = (body.get("desired") or {}).get("registry") or {}
    return registry.get("last_error")


def logs(container: str, lines: int = 40) -> str:
    p = subprocess.run(["podman", "logs", "--tail", str(lines), container], text=True, capture_output=True)
    return (p.stdout + p.stderr).strip()
