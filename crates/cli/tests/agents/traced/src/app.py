import asyncio

from fastapi import FastAPI, Request, WebSocket

from .otel import tracer

app = FastAPI()


@app.get("/work")
async def work(request: Request):
    with tracer.start_as_current_span("agent-work") as span:
        span.set_attribute("agent.saw_traceparent", request.headers.get("traceparent", ""))
        return {"traceparent": request.headers.get("traceparent")}


@app.get("/plain")
async def plain(request: Request):
    return {"traceparent": request.headers.get("traceparent")}


@app.get("/slow")
async def slow(seconds: float = 1.0):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    # The context the agent was handed, as its first message.
    await websocket.accept()
    await websocket.send_text(websocket.headers.get("traceparent") or "")
    await websocket.receive_text()
    await websocket.close()
