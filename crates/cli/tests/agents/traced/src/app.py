import asyncio

from fastapi import FastAPI, Request

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
