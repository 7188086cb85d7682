"""WebSocket routes the tests drive: echo, close codes, refusal, a flood
that only flow control can hold back, and what the app saw of disconnects."""

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

# What the app has seen, for the tests to read over REST.
seen = {"disconnects": [], "flood_sent": 0}


def gate():
    """Created on first use, inside the agent host's event loop."""
    if "gate" not in seen:
        seen["gate"] = asyncio.Event()
    return seen["gate"]


def mount(app: FastAPI) -> None:
    @app.websocket("/ws")
    async def echo(ws: WebSocket):
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="echo.v1" if "echo.v1" in offered else None)
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    seen["disconnects"].append(msg.get("code"))
                    return
                if msg.get("text") is not None:
                    text = msg["text"]
                    if text.startswith("close:"):
                        code = int(text.split(":", 1)[1])
                        await ws.close(code=code, reason="closed by the app")
                        return
                    await ws.send_text(text)
                else:
                    await ws.send_bytes(msg["bytes"])
        except WebSocketDisconnect as e:
            seen["disconnects"].append(e.code)

    @app.websocket("/ws/refuse")
    async def refuse(ws: WebSocket):
        await ws.close(code=4403)

    @app.websocket("/ws/flood")
    async def flood(ws: WebSocket):
        """Sends `count` messages of `size` bytes as fast as `send` lets it."""
        await ws.accept()
        size = int(ws.query_params.get("size", "65536"))
        count = int(ws.query_params.get("count", "512"))
        chunk = b"x" * size
        seen["flood_sent"] = 0
        for _ in range(count):
            await ws.send_bytes(chunk)
            seen["flood_sent"] += size
        await ws.close(code=1000)

    @app.websocket("/ws/sink")
    async def sink(ws: WebSocket):
        """Reads nothing until `POST /api/sink/open`, then counts until "end"."""
        await ws.accept()
        await gate().wait()
        count = size = 0
        while True:
            msg = await ws.receive()
            if msg.get("text") == "end" or msg["type"] == "websocket.disconnect":
                break
            count += 1
            size += len(msg.get("bytes") or b"")
        await ws.send_text(f"{count} {size}")

    @app.post("/api/sink/open")
    async def open_sink():
        gate().set()
        return {"open": True}

    @app.websocket("/ws/hold")
    async def hold(ws: WebSocket):
        """Accepts and waits for the client to leave."""
        await ws.accept()
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect as e:
            seen["disconnects"].append(e.code)

    @app.get("/api/seen")
    async def api_seen():
        return {k: v for k, v in seen.items() if k != "gate"}

    @app.get("/api/hello")
    async def hello():
        await asyncio.sleep(0)
        return {"message": "Hello from REST"}
