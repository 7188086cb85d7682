"""Conversations through the ALB stand-in with pixell-sdk's own `A2AClient`
(deploy/checks/ecs-rehearsal), against deploy/checks/agents/conversation,
which answers with the host and process that served each turn and how many
earlier turns of the session that process served.

Runs with a python holding pixell-sdk==0.5.4 (the rehearsal uses
target/pixell-tools/pixell-sdk-0.5.4, made by dev/build-fixtures).

    conversations.py AGENT_URL --clients keep|fresh [--sessions S] [--turns T]

- `keep`: each session has one A2AClient of its own for all its turns (a
  user's own client). A2AClient makes one httpx.AsyncClient on first use and
  keeps it until close(); httpx keeps the cookies answers set, so the ALB's
  AWSALB cookie goes back on every later turn.
- `fresh`: every turn is sent by a new A2AClient, closed after it (a client
  made per request, as a stateless backend does): no cookie is ever sent
  back. The sessionId is sent on every turn all the same.

Sessions run concurrently, the turns of a session one after another; the
message text is the turn number. Prints one JSON object:
{"clients", "sessions": [{"session", "turns": [{"turn", "host", "pid", "seen",
"cookie"}], "errors": [...]}]}; `cookie` is the AWSALB value the client held
after the turn (keep) or null. Exit 0 once the figures are gathered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from pixell.sdk.a2a.client import A2AClient


async def turn(client: A2AClient, sid: str, n: int) -> dict:
    event = await client.send_message(str(n), session_id=sid)
    data = event.data or {}
    return {"turn": n, "host": data.get("host"), "pid": data.get("pid"), "seen": data.get("seen"),
            "session_echoed": data.get("session") == sid}


def cookie_of(client: A2AClient) -> str | None:
    # A2AClient's own httpx client (made on first use): its cookie jar.
    return client._client.cookies.get("AWSALB") if client._client is not None else None


async def session(url: str, keep: bool, turns: int, timeout: float) -> dict:
    sid = str(uuid.uuid4())
    out = {"session": sid, "turns": [], "errors": []}
    kept = A2AClient(url, timeout=timeout, max_retries=1) if keep else None
    try:
        for n in range(1, turns + 1):
            client = kept or A2AClient(url, timeout=timeout, max_retries=1)
            try:
                t = await turn(client, sid, n)
                t["cookie"] = cookie_of(client) if keep else None
                out["turns"].append(t)
            except Exception as e:  # counted; the session goes on
                out["errors"].append(f"turn {n}: {type(e).__name__}: {e}")
            finally:
                if not keep:
                    await client.close()
    finally:
        if kept:
            await kept.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(prog="conversations.py")
    ap.add_argument("url")
    ap.add_argument("--clients", choices=["keep", "fresh"], required=True)
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    sessions = await asyncio.gather(
        *(session(a.url, a.clients == "keep", a.turns, a.timeout) for _ in range(a.sessions)))
    print(json.dumps({"clients": a.clients, "sessions": sessions}))


if __name__ == "__main__":
    asyncio.run(main())
