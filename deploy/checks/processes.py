"""The processes inside a running container as its /proc shows them (command,
uids, effective capabilities by name), and the identity the image promises
for them. When the image's process model changes,
change the promise here: PID1, SUPERVISOR_UID, SUPERVISOR_CAPS, AGENT_UIDS."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from podman_host import run

# What the image promises. tini (PID 1) is root, as the container starts: it
# only reaps and forwards signals. The supervisor drops to SUPERVISOR_UID with
# the capabilities it needs to start agents under their own uids and signal
# them; every agent's processes (worker, Python host, anything they start) and
# the installer that builds Python environments run under uids from
# AGENT_UIDS, one per agent, with no capabilities and no_new_privs.
PID1 = "/usr/bin/tini"
SUPERVISOR_UID = "10001"
SUPERVISOR_CAPS = {"CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"}
AGENT_UIDS = range(20000, 30000)

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
    out.append({'pid': int(pid), 'ppid': int(st['PPid']), 'cmd': cmd, 'uids': st['Uid'].split(),
                'cap_eff': st['CapEff'], 'nnp': st.get('NoNewPrivs', '?').strip()})
print(json.dumps(out))
"""


@dataclass
class Proc:
    pid: int
    ppid: int
    cmd: list[str]
    uids: list[str]  # real, effective, saved, filesystem
    caps: set[str]
    nnp: str  # NoNewPrivs: "1" or "0"

    @property
    def program(self) -> str:
        """`par`, `tini`, `python` (any python3.x), ..."""
        name = Path(self.cmd[0]).name if self.cmd else "?"
        return re.sub(r"^python[\d.]*$", "python", name)

    @property
    def is_supervisor(self) -> bool:
        return self.program == "par" and self.cmd[1:2] == ["supervisor"]

    def show(self) -> str:
        return f"pid {self.pid} {' '.join(self.cmd[:3])} (uid {self.uids[1]}, {', '.join(sorted(self.caps)) or 'no caps'})"


def capability_names(mask_hex: str) -> set[str]:
    mask = int(mask_hex, 16)
    return {f"CAP_{CAPABILITIES[i]}" if i < len(CAPABILITIES) else f"CAP_{i}" for i in range(64) if mask >> i & 1}


def scan(container: str) -> list[Proc]:
    out = run(["podman", "exec", container, "python3", "-c", SCAN]).stdout
    return [Proc(p["pid"], p["ppid"], p["cmd"], p["uids"], capability_names(p["cap_eff"]), p["nnp"])
            for p in json.loads(out)]


def identity_problems(procs: list[Proc], workers: dict[str, int]) -> list[str]:
    """Every way the processes differ from the promise; `workers` maps each
    agent id to its worker's pid (from /supervisor/processes)."""
    problems = []
    by_pid = {p.pid: p for p in procs}
    if 1 not in by_pid or by_pid[1].cmd[:1] != [PID1]:
        problems.append(f"PID 1 is not {PID1}: {by_pid.get(1) and by_pid[1].show()}")
    supervisors = [p for p in procs if p.is_supervisor]
    if len(supervisors) != 1:
        problems.append(f"{len(supervisors)} supervisors: " + "; ".join(p.show() for p in supervisors))
    for p in procs:
        if p.pid == 1:
            continue
        if p.is_supervisor:
            if set(p.uids) != {SUPERVISOR_UID}:
                problems.append(f"the supervisor's uids are {p.uids}, expected {SUPERVISOR_UID}: {p.show()}")
            if p.caps != SUPERVISOR_CAPS:
                problems.append(f"the supervisor's capabilities {sorted(p.caps)}, expected {sorted(SUPERVISOR_CAPS)}")
            continue
        if any(int(u) not in AGENT_UIDS for u in p.uids):
            problems.append(f"uids {p.uids} outside {AGENT_UIDS.start}-{AGENT_UIDS.stop - 1}: {p.show()}")
        if p.caps:
            problems.append(f"capabilities {sorted(p.caps)}: {p.show()}")
        if p.nnp != "1":
            problems.append(f"no_new_privs not set: {p.show()}")
    # One uid per agent: its worker and everything under it; no two agents alike.
    uid_of = {}
    for agent, pid in workers.items():
        if pid not in by_pid:
            problems.append(f"agent {agent}: worker pid {pid} not found")
            continue
        uid_of[agent] = by_pid[pid].uids[1]
        for child in descendants(procs, pid):
            if child.uids[1] != uid_of[agent]:
                problems.append(f"agent {agent} (uid {uid_of[agent]}) has a process of another uid: {child.show()}")
    shared = {u for u in uid_of.values() if list(uid_of.values()).count(u) > 1}
    if shared:
        problems.append(f"agents share a uid: {sorted((a, u) for a, u in uid_of.items() if u in shared)}")
    return problems


def descendants(procs: list[Proc], pid: int) -> list[Proc]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for p in procs:
            if p.ppid == parent:
                out.append(p)
                todo.append(p.pid)
    return out
