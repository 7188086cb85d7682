def handler(context):
    return {"ok": True}
