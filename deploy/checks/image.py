"""The project's image, built with podman from deploy/docker/Dockerfile.multipar:
the build (timed, with how many steps came from the layer cache), its size,
and the Dockerfile's ARG defaults the checks rely on."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from podman_host import REPO, WORK, run, say

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile.multipar"
TAG = "localhost/pixell-runtime:multipar"


@dataclass
class Build:
    image_id: str
    seconds: float
    steps: int
    cached: int  # steps taken from the layer cache

    @property
    def kind(self) -> str:
        if self.cached == 0:
            return "cold"
        return "warm" if self.cached == self.steps else f"partly cached ({self.cached}/{self.steps} steps)"


def build(volumes: list[str], log_name: str = "build") -> Build:
    """`podman build` as the README says (from the repository root, docker
    format so that HEALTHCHECK is kept), base images never pulled."""
    WORK.mkdir(parents=True, exist_ok=True)
    iidfile = WORK / f"{log_name}.iid"
    log = WORK / f"{log_name}.log"
    args = ["podman", "build", "--pull=never", "--format", "docker", *(a for v in volumes for a in ("-v", v)),
            "-f", str(DOCKERFILE), "--iidfile", str(iidfile), "-t", TAG, str(REPO)]
    say(f"image: podman build ... (log: {log.relative_to(REPO)})")
    t0 = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - t0
    text = log.read_text()
    if p.returncode != 0:
        raise SystemExit(f"image build failed ({p.returncode}); last lines of {log}:\n" + "\n".join(text.splitlines()[-40:]))
    steps = len(re.findall(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (?!FROM)", text, re.M))
    cached = len(re.findall(r"^--> Using cache", text, re.M))
    return Build(iidfile.read_text().strip().removeprefix("sha256:"), seconds, steps, cached)


def size_bytes(image: str) -> int:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", image]).stdout.strip())


def arg_defaults() -> dict[str, str]:
    """ARG NAME=default lines of the Dockerfile."""
    out = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"\s*ARG\s+(\w+)=(\S+)", line)
        if m:
            out[m[1]] = m[2].strip('"')
    return out


def image_env(image: str) -> dict[str, str]:
    env = run(["podman", "image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", image]).stdout
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line)


def report(builds: list[Build], image: str) -> None:
    for b in builds:
        say(f"build: {b.seconds:6.1f} s  {b.kind}")
    say(f"image: {image[:12]}  {size_bytes(image) / 1e6:.0f} MB")
