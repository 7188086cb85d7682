"""Local stand-ins for the Dockerfile's base images, for machines that cannot
pull from Docker Hub: built from Debian (debootstrap) and the host's Rust
toolchain, tagged with the exact names the Dockerfile's FROM lines use, and
kept in podman's storage between runs.

A stand-in carries the label `par.stand-in` (a key of its recipe); it is
rebuilt when the recipe or the host toolchain changes. An image of that name
without the label is a real one (pulled or loaded by hand) and is used as is.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from podman_host import WORK, machine_lock, run, say

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOT_IMAGE = f"localhost/par-stand-in/debian:{SUITE}-minbase"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def rust_sysroot() -> Path:
    return Path(run(["rustc", "--print", "sysroot"]).stdout.strip())


@dataclass
class Recipe:
    """A Containerfile on top of the debootstrap root, with host folders
    mounted read-only while it builds."""

    containerfile: str
    # Host path -> path in the build (read-only), computed when building.
    mounts: Callable[[], dict[str, str]] = dict
    # What else, outside the recipe text, makes a stand-in out of date.
    key_extra: Callable[[], str] = str

    def key(self) -> str:
        h = hashlib.sha256((self.containerfile + self.key_extra()).encode())
        return h.hexdigest()[:16]


# The official images' relevant parts: Python 3.11 with pip and venv under
# /usr/local/bin (pip may install system-wide, as in the official image);
# a Rust toolchain with cargo in /usr/local/cargo/bin and a C compiler (ring).
RECIPES = {
    "python:3.11-slim-bookworm": Recipe(
        containerfile=f"""\
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/python3 /usr/local/bin/python3 \\
 && ln -s /usr/bin/python3 /usr/local/bin/python \\
 && ln -s /usr/bin/pip3 /usr/local/bin/pip3 \\
 && ln -s /usr/bin/pip3 /usr/local/bin/pip \\
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ENV LANG=C.UTF-8 PATH={PATH_ENV}
CMD ["python3"]
""",
    ),
    "rust:1-slim-bookworm": Recipe(
        containerfile=f"""\
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:{PATH_ENV}
RUN mkdir -p /usr/local/rust /usr/local/cargo/bin \\
 && cp -a /mnt/rust/bin /mnt/rust/lib /mnt/rust/libexec /usr/local/rust/ \\
 && ln -s /usr/local/rust/bin/* /usr/local/cargo/bin/ \\
 && cargo --version && rustc --version
""",
        mounts=lambda: {str(rust_sysroot()): "/mnt/rust"},
        key_extra=lambda: run(["rustc", "--version"]).stdout,
    ),
}


def qualified(name: str) -> str:
    """The name podman resolves a Docker Hub short name to."""
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def base_images(dockerfile: Path) -> list[str]:
    """External images named by FROM (stage names excluded), ARG defaults expanded."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    out: list[str] = []
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"\s*ARG\s+(\w+)=(\S+)", line)
        if m and not out:
            args[m[1]] = m[2].strip('"')
        m = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            image = re.sub(r"\$\{?(\w+)\}?", lambda v: args.get(v[1], v[0]), m[1])
            if image not in stages and image not in out:
                out.append(image)
            if m[2]:
                stages.add(m[2])
    return out


def runtime_base(dockerfile: Path) -> str:
    """The last stage's base image, fully qualified: what the running image is built on."""
    return qualified(base_images(dockerfile)[-1])


def label(image: str) -> str | None:
    p = run(["podman", "image", "inspect", "--format", '{{index .Labels "par.stand-in"}}', image], check=False)
    if p.returncode != 0:
        return None
    return p.stdout.strip()  # "" or "<no value>" for a real image


def ensure(dockerfile: Path) -> dict[str, str]:
    """Every base image of the Dockerfile present locally; returns name -> what it is."""
    found = {}
    with machine_lock("stand-ins"):
        for name in base_images(dockerfile):
            full = qualified(name)
            have = label(full)
            recipe = RECIPES.get(name)
            if have is not None and (recipe is None or have in ("", "<no value>")):
                found[name] = "present"
                continue
            if recipe is None:
                raise SystemExit(
                    f"base image {name} is not present and deploy/checks/standins.py has no "
                    f"stand-in recipe for it: add one to RECIPES, or load the real image"
                )
            if have == recipe.key():
                found[name] = "stand-in (cached)"
                continue
            build(full, recipe)
            found[name] = "stand-in (built)"
    return found


def ensure_root() -> None:
    if run(["podman", "image", "exists", ROOT_IMAGE], check=False).returncode == 0:
        return
    say(f"stand-ins: debootstrap --variant=minbase {SUITE} (a few minutes, once per machine)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="par-debootstrap-", dir=WORK) as d:
        root = Path(d) / "root"
        run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR])
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "--change", f"ENV PATH={PATH_ENV}", "--change", 'CMD ["bash"]', "-", ROOT_IMAGE],
            stdin=tar.stdout)
        tar.wait()
    say(f"stand-ins: {ROOT_IMAGE} in {time.monotonic() - t0:.0f} s")


def build(image: str, recipe: Recipe) -> None:
    ensure_root()
    say(f"stand-ins: building {image}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="par-stand-in-", dir=WORK) as d:
        cf = Path(d) / "Containerfile"
        cf.write_text(
            f"FROM {ROOT_IMAGE}\n{recipe.containerfile}"
            f'LABEL par.stand-in="{recipe.key()}" '
            f'org.opencontainers.image.description="local stand-in built by deploy/checks/standins.py"\n'
        )
        vols = []
        for host, inside in recipe.mounts().items():
            vols += ["-v", f"{host}:{inside}:ro"]
        run(["podman", "build", "--pull=never", "--format", "docker", *vols, "-t", image, "-f", str(cf), d])
    say(f"stand-ins: {image} in {time.monotonic() - t0:.0f} s")
