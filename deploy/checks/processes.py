"""The processes inside a running container as its /proc shows them (command,
uids, effective capabilities by name), and the identity the image promises
for them. When the image's process model changes (per-agent users, say),
change the promise here: PID1, ROOT_ALLOWED, EFFECTIVE_CAPS."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from podman_host import run

# What the image promises.
PID1 = "/usr/bin/tini"
ROOT_ALLOWED = False
# Program -> the exact effective capabilities it runs with; any other: none.
# `par` (supervisor and workers) binds port 80 through its file capability;
# the Python agent hosts are exec'ed without it.
EFFECTIVE_CAPS = {"par": {"CAP_NET_BIND_SERVICE"}}

# Linux capability numbers (include/uapi/linux/capability.h).
CAPABILITIES = """CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE""".split()

# Runs inside the container (python3 is in the image); lists every process but itself.
SCAN = """
import json, os
out = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    if int(pid) == os.getpid():
        continue
    try:
        cmd = [c.decode() for c in open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0') if c]
        st = dict(l.split(':\\t', 1) for l in open(f'/proc/{pid}/status').read().splitlines() if ':\\t' in l)
    except OSError:
        continue
    out.append({'pid': int(pid), 'cmd': cmd, 'uids': st['Uid'].split(), 'cap_eff': st['CapEff']})
print(json.dumps(out))
"""


@dataclass
class Proc:
    pid: int
    cmd: list[str]
    uids: list[str]  # real, effective, saved, filesystem
    caps: set[str]

    @property
    def program(self) -> str:
        """`par`, `tini`, `python` (any python3.x), ..."""
        name = Path(self.cmd[0]).name if self.cmd else "?"
        return re.sub(r"^python[\d.]*$", "python", name)

    def show(self) -> str:
        return f"pid {self.pid} {' '.join(self.cmd[:3])} (uid {self.uids[1]}, {', '.join(sorted(self.caps)) or 'no caps'})"


def capability_names(mask_hex: str) -> set[str]:
    mask = int(mask_hex, 16)
    return {f"CAP_{CAPABILITIES[i]}" if i < len(CAPABILITIES) else f"CAP_{i}" for i in range(64) if mask >> i & 1}


def scan(container: str) -> list[Proc]:
    out = run(["podman", "exec", container, "python3", "-c", SCAN]).stdout
    return [Proc(p["pid"], p["cmd"], p["uids"], capability_names(p["cap_eff"])) for p in json.loads(out)]


def identity_problems(procs: list[Proc]) -> list[str]:
    """Every way the processes differ from the promise."""
    problems = []
    by_pid = {p.pid: p for p in procs}
    if 1 not in by_pid or by_pid[1].cmd[:1] != [PID1]:
        problems.append(f"PID 1 is not {PID1}: {by_pid.get(1) and by_pid[1].show()}")
    for p in procs:
        if not ROOT_ALLOWED and "0" in p.uids:
            problems.append(f"runs as root: {p.show()}")
        want = EFFECTIVE_CAPS.get(p.program, set())
        if p.caps != want:
            problems.append(f"effective capabilities {sorted(p.caps)}, expected {sorted(want)}: {p.show()}")
    return problems
