"""Echo agent: answers with the request it was given."""

import os


def handler(context):
    return {"echo": context, "agent_id": os.environ.get("PAR_AGENT_ID")}
