"""The ticker's A2A gRPC service: `Invoke(action="echo")` answers its parameters."""


class Service:
    def __init__(self):
        self.custom_handlers = {"echo": echo}


async def echo(parameters):
    return dict(parameters)


def serve():
    return Service()
