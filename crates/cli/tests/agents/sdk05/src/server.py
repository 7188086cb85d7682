"""A pixell-sdk 0.5 agent: the package's ASGI app is the sdk's own AgentServer app.

JSON-RPC 2.0 `message/stream` / `message/send` on `POST /`, `/.well-known/agent.json`,
and `GET /files/download?path=...` (from `outputs_dir`) all come from the sdk.
The handler sleeps between events so a client can tell streaming from buffering.
For the byte-exact check, every SSE event the sdk encodes is recorded and
served back at `GET /test/sent`.
"""

import asyncio
import os

from pixell.sdk import AgentServer, MessageContext
from pixell.sdk.a2a import streaming

DELAY = float(os.environ.get("SDK05_DELAY", "1.0"))

SENT = []
_encode = streaming.SSEEvent.encode


def _recording_encode(self):
    text = _encode(self)
    SENT.append(text)
    return text


streaming.SSEEvent.encode = _recording_encode

server = AgentServer(
    agent_id="sdk05-agent",
    name="SDK 0.5 Agent",
    description="echoes the message in three events",
    outputs_dir="outputs",
)


@server.on_message
async def handle_message(ctx: MessageContext):
    await ctx.emit_status("working", f"received: {ctx.text}")
    await asyncio.sleep(DELAY)
    await ctx.emit_progress(50.0, "half way")
    await asyncio.sleep(DELAY)
    await ctx.emit_result(f"echo: {ctx.text}", {"answer": ctx.text.upper()})


app = server.app


@app.get("/test/sent")
async def sent():
    return {"events": SENT}
