"""Flaky agent: misbehaves on request, to exercise timeouts, errors and restarts.

{"action": "sleep", "seconds": N}  answers after N seconds
{"action": "fail"}                 raises RuntimeError (HTTP 500)
{"action": "crash"}                exits the agent host at once (the worker exits 1)
{"action": "log", "message": M}    prints M (the supervisor's logs show it)
anything else                      {"ok": true}
"""

import os
import time


def handler(context):
    action = context.get("action") if isinstance(context, dict) else None
    if action == "sleep":
        seconds = float(context.get("seconds", 1))
        time.sleep(seconds)
        return {"slept": seconds}
    if action == "fail":
        raise RuntimeError("requested failure")
    if action == "crash":
        os._exit(3)
    if action == "log":
        message = str(context.get("message", ""))
        print(message, flush=True)
        return {"logged": message}
    return {"ok": True}
