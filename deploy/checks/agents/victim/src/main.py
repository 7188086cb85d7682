"""Victim agent: holds secrets (VICTIM_TOKEN from its env_vars, one in its
.env) and answers with its uid, to show it was reached the intended way."""

import os


def handler(context):
    return {"victim": True, "uid": os.getuid()}
