from .otel import tracer


class Service:
    def __init__(self):
        self.custom_handlers = {"echo": self.echo}

    async def echo(self, parameters):
        with tracer.start_as_current_span("agent-a2a"):
            return parameters.get("text", "")


def serve():
    return Service()
