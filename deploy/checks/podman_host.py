"""Podman on this machine: the Debian packages, the containers.conf the
checks need, the host CA bundle, a machine-wide lock, and a register of every
container, pod and process a check starts so that all of them are removed.

Used by `deploy/checks/container` and `deploy/checks/ecs-rehearsal`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Owned by the checks: build contexts, generated configs, logs (never tracked).
WORK = REPO / "target" / "container-checks"

PACKAGES = {  # command -> Debian package
    "podman": "podman",
    "buildah": "buildah",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "iptables": "iptables",
}

SYSTEM_CONF = Path("/etc/containers/containers.conf")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# crun refuses the hybrid cgroup v1/v2 layout some machines have; runc runs
# there. A container may not raise its limits above the host's hard limits,
# and podman's defaults (nofile 1048576) are above them on small machines.
WANTED_ULIMITS = {"nofile": 65536, "nproc": 32768}


def say(msg: str) -> None:
    print(msg, flush=True)


def run(args: list[str], check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs a command; on failure, the error names it and shows its output."""
    p = subprocess.run(args, text=True, capture_output=capture, **kw)
    if check and p.returncode != 0:
        out = ((p.stdout or "") + (p.stderr or "")).strip()
        raise SystemExit(f"failed ({p.returncode}): {' '.join(args)}\n{out[-4000:]}")
    return p


def apt_install(commands: dict[str, str]) -> None:
    """Installs the Debian packages of the commands that are missing."""
    need = sorted({pkg for cmd, pkg in commands.items() if not shutil.which(cmd)})
    if not need:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(need)}: install them (apt-get install) or run as root")
    say(f"installing {' '.join(need)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env)


def ulimits() -> dict[str, tuple[int, int]]:
    """The limits containers get: the wanted ones, capped by the host's hard limits."""
    out = {}
    for name, want in WANTED_ULIMITS.items():
        _, hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))
        value = want if hard == resource.RLIM_INFINITY else min(want, hard)
        out[name] = (value, value)
    return out


def containers_conf_text() -> str:
    limits = ", ".join(f'"{k}={s}:{h}"' for k, (s, h) in ulimits().items())
    return (
        "# Written by deploy/checks (podman_host.py): runc, and limits within\n"
        "# this machine's hard limits.\n"
        "[containers]\n"
        f"default_ulimits = [{limits}]\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
    )


def configure() -> None:
    """Makes podman usable here: packages, then containers.conf. The system
    file is written only when absent; an existing one that lacks runc is left
    alone and an owned copy is used through CONTAINERS_CONF."""
    apt_install(PACKAGES)
    WORK.mkdir(parents=True, exist_ok=True)
    text = containers_conf_text()
    if "CONTAINERS_CONF" in os.environ:
        say(f"containers.conf: {os.environ['CONTAINERS_CONF']} (CONTAINERS_CONF)")
    elif not SYSTEM_CONF.exists():
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(text)
        say(f"containers.conf: wrote {SYSTEM_CONF}")
    elif 'runtime = "runc"' in SYSTEM_CONF.read_text() and "default_ulimits" in SYSTEM_CONF.read_text():
        say(f"containers.conf: {SYSTEM_CONF}")
    else:
        owned = WORK / "containers.conf"
        owned.write_text(text)
        os.environ["CONTAINERS_CONF"] = str(owned)
        say(f"containers.conf: {owned} ({SYSTEM_CONF} exists without runc/ulimits)")
    info = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}"])
    say(f"podman {podman_version()}: runtime and storage {info.stdout.strip()}")


def podman_version() -> str:
    return run(["podman", "version", "--format", "{{.Client.Version}}"]).stdout.strip()


def host_ca_volume(image: str) -> str | None:
    """A `-v` volume giving a build or a container the host's CA bundle, when
    the host trusts certificates that `image` does not (a TLS-inspecting
    proxy): without it cargo, pip and uv fail with certificate errors."""
    if not HOST_CA_BUNDLE.is_file():
        return None
    p = run(
        ["podman", "run", "--rm", "--network=none", "--entrypoint", "cat", image, str(HOST_CA_BUNDLE)],
        check=False,
    )
    theirs = set(pem_blocks(p.stdout)) if p.returncode == 0 else set()
    if all(b in theirs for b in pem_blocks(HOST_CA_BUNDLE.read_text())):
        return None
    return f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"


def pem_blocks(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [b.strip() + end for b in text.split(end) if "BEGIN CERTIFICATE" in b]


@contextlib.contextmanager
def machine_lock(name: str):
    """Serializes work on machine-wide state (stand-in images, the image tag)
    between checks run at the same time from different clones."""
    path = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    with open(path / f"par-{name}.lock", "w") as f:
        t0 = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another check holding {f.name}")
            fcntl.flock(f, fcntl.LOCK_EX)
            say(f"  got it after {time.monotonic() - t0:.0f} s")
        yield


class Cleanup:
    """Every container, pod and host process a check starts, removed at exit
    (also on Ctrl-C and SIGTERM)."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.pods: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.callbacks: list = []
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, *exc) -> None:
        for cb in reversed(self.callbacks):
            with contextlib.suppress(Exception):
                cb()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Newest first: a container that joined another's network goes before it.
        for name in reversed(self.containers):
            run(["podman", "rm", "-f", "-t", "0", "-i", name], check=False)
        for pod in self.pods:
            run(["podman", "pod", "rm", "-f", "-t", "0", "-i", pod], check=False)
