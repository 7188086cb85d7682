from .otel import tracer


def handler(request):
    # A sync handler: runs in the host's thread pool.
    with tracer.start_as_current_span("agent-invoke") as span:
        span.set_attribute("agent.request", str(request))
        return {"ok": True}
