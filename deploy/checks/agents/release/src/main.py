"""Release agent: answers with the RELEASE variable its declaration sets, so
that a caller sees which version of the declaration served the request."""

import os


def handler(context):
    return {"release": os.environ.get("RELEASE"), "agent_id": os.environ.get("PAR_AGENT_ID")}
