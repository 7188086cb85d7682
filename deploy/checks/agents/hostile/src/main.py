"""Hostile agent: is told pids and paths of other agents and the supervisor,
tries to read, signal and write them, and answers what each attempt got
("denied" is the answer the check wants). It then calls the victim the
intended way, through the supervisor."""

import json
import os
import urllib.request


def attempt(fn):
    try:
        got = fn()
        return "allowed: " + str(got)[:80]
    except PermissionError:
        return "denied"
    except ProcessLookupError:
        return "no such process"
    except OSError as e:
        return "error: " + repr(e)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path):
    with open(path, "w") as f:
        f.write("owned")
    return path


def handler(target):
    out = {}
    for name, pid in target.get("pids", {}).items():
        out["environ " + name] = attempt(lambda: read(f"/proc/{pid}/environ"))
        out["kill " + name] = attempt(lambda: os.kill(pid, 0))
        out["mem " + name] = attempt(lambda: read(f"/proc/{pid}/mem"))
    for name, path in target.get("read", {}).items():
        out["read " + name] = attempt(lambda: read(path))
    for name, path in target.get("list", {}).items():
        out["list " + name] = attempt(lambda: os.listdir(path))
    for name, path in target.get("write", {}).items():
        out["write " + name] = attempt(lambda: write(path))
    status = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in open("/proc/self/status") if ":" in l}
    own = {
        "uid": os.getuid(),
        "groups": os.getgroups(),
        "CapEff": status["CapEff"],
        "CapPrm": status["CapPrm"],
        "NoNewPrivs": status["NoNewPrivs"],
        # Its own environment it can read: the refusals are about whose it is.
        "environ": attempt(lambda: len(read("/proc/self/environ")) > 0),
    }
    result = {"attempts": out, "own": own}
    victim = target.get("call")
    if victim:
        url = f"{os.environ['PAR_SUPERVISOR_URL']}/agents/{victim}/invoke"
        req = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            result["via_supervisor"] = json.loads(r.read())
    return result
