"""Multi agent: a handler plus sub-agents exposed as exports.

POST /exports/add calls `add` below (export name, hyphens -> underscores).
POST /exports/word-count has no function of its own, so the handler receives
{"action": "word-count", ...body}. `secret` is private: the worker answers 404.
"""


def handler(context):
    action = context.get("action") if isinstance(context, dict) else None
    if action == "word-count":
        return {"words": len(str(context.get("text", "")).split())}
    return {"actions": ["add", "word-count"], "received": context}


def add(body):
    values = body.get("values", []) if isinstance(body, dict) else []
    return {"sum": sum(values)}


async def secret(body):
    return {"secret": "never routed"}
