"""Ticker agent: a plain ASGI app (standard library only) that streams events.

    GET /events?n=50&gap_ms=10   n SSE events, gap_ms apart (text/event-stream);
                                 delay_ms=5 waits before the first one, pad=0
                                 leaves out the 2 KB padding comment
    POST /                       JSON-RPC-like: {"n": 3, "gap_ms": 0} -> the same stream
    GET /health                  {"ok": true}

Each event carries the agent's own monotonic send time (`t` in ns), so a client
can tell what the transport added to each gap. Runs under PAR (`http_server`)
and under any ASGI server, e.g. `uvicorn src.app:app`.
"""

import asyncio
import json
import time
from urllib.parse import parse_qs

PADDING = b":" + b"-" * 2048 + b"\n\n"


def _params(scope, body):
    q = parse_qs(scope.get("query_string", b"").decode())
    p = {k: v[-1] for k, v in q.items()}
    if body:
        try:
            p.update(json.loads(body))
        except ValueError:
            pass
    n = max(0, min(int(p.get("n", 3)), 100_000))
    gap = max(0.0, float(p.get("gap_ms", 0))) / 1000.0
    delay = max(0.0, float(p.get("delay_ms", 0))) / 1000.0
    return n, gap, delay, bool(int(p.get("pad", 1)))


async def _read_body(receive):
    body = b""
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return body
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    path = scope["path"]
    if path == "/health":
        await _json(send, 200, {"ok": True})
        return
    if path not in ("/", "/events"):
        await _json(send, 404, {"error": f"no route {path}"})
        return
    n, gap, delay, pad = _params(scope, body)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
    })
    if pad:
        await send({"type": "http.response.body", "body": PADDING, "more_body": True})
    if delay:
        await asyncio.sleep(delay)
    for i in range(n):
        if i and gap:
            await asyncio.sleep(gap)
        data = json.dumps({"seq": i, "t": time.monotonic_ns()})
        event = f"id: {i}\nevent: tick\ndata: {data}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _json(send, status, obj):
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
