"""Drives conversations against a pixell-sdk agent (fixtures/agents/sdk-sessions)
with pixell-sdk's own `A2AClient`, as users would, and prints one JSON object of
figures on stdout.

Runs with the python of the venv dev/build-fixtures makes for pixell-sdk
(target/pixell-tools/pixell-sdk-0.5.4/bin/python: exactly pixell-sdk==0.5.4 and
its httpx; the test tools venv holds no `pixell` module).

    sessions_drive.py BASE_URL [all|turns|clarify|ask|answer STATE] [options]

BASE_URL is the agent's A2A URL, e.g. http://127.0.0.1:PORT/agents/ID.

- `turns`: S sessions (--sessions, default 20) of T turns (--turns, default 6),
  sessions concurrently, turns of a session one after another, each session
  with an A2AClient of its own (a user's own client). Turn 1 of a session has
  no history to see; turns 2..T are counted: `turns_total` = S x (T-1) (100 by
  default), `turns_with_history` = those whose reply remembered exactly the
  session's earlier turns, in order. `sessions_on_one_pid` = sessions whose
  turns were all answered by one process. With --agent-session turn 1 sends
  no sessionId: the sdk mints one (in every SSE event of its answer) and the
  later turns send that one (what `A2AClient.send_message` callers do).
- `clarify`: C sessions (--clarifications, default 20) each send "clarify"
  (message/stream; the agent asks a plan-mode clarification), then answer it
  with `respond`: A2AClient.respond (params with sessionId), or with
  --respond-without-session a JSON-RPC `respond` whose params carry only
  clarificationId/answers (read through the sdk's own SSE reader).
  `answered_by_asker` = answers answered by the process that asked and that
  holds the clarification (askedHere); `sdk_found_pending` = answers where the
  sdk handed the handler the session whose pending clarification it is.
- `all` (the default): `turns` then `clarify`: {"turns": {...}, "clarify": {...}}.
- `ask`: starts the C clarifications and prints the state JSON (one line) for
  `answer`; `answer STATE` answers them (STATE: the JSON, or `-` for stdin).
  `clarify --pause` does both in one run: prints the state line, waits for a
  line on stdin, then answers (a test does a rollout in between).

Options: --header k:v (repeatable) on every request; --session-header sends
`x-par-session-id: <sessionId>` on each session's requests; --timeout seconds.
Exit status 0 when the figures were gathered (whatever they are), 2 on a usage
error; a request that fails is counted in `error_count` (the first 10 messages
in `errors`).
"""

import argparse
import asyncio
import json
import sys
import uuid

import httpx
from pixell.sdk.a2a.client import A2AClient


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sessions_drive.py")
    p.add_argument("base_url")
    p.add_argument(
        "mode", nargs="?", default="all", choices=["all", "turns", "clarify", "ask", "answer"]
    )
    p.add_argument("state", nargs="?", help="for `answer`: the state JSON from `ask`, or -")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--clarifications", type=int, default=20)
    p.add_argument("--respond-without-session", action="store_true")
    p.add_argument("--session-header", action="store_true")
    p.add_argument("--agent-session", action="store_true")
    p.add_argument("--pause", action="store_true")
    p.add_argument("--header", action="append", default=[], metavar="K:V")
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    if a.mode == "answer" and not a.state:
        p.error("answer needs the state JSON from `ask` (or - to read it from stdin)")
    headers = {}
    for h in a.header:
        k, sep, v = h.partition(":")
        if not sep or not k.strip():
            p.error(f"--header wants k:v, got {h!r}")
        headers[k.strip()] = v.strip()
    a.headers = headers
    return a


def client_for(args, session_id):
    """An A2AClient of its own for one session (a user's own client: it keeps
    its cookies), with the extra headers on every request."""
    c = A2AClient(args.base_url, timeout=args.timeout, max_retries=1)
    headers = dict(args.headers)
    if args.session_header and session_id:
        headers["x-par-session-id"] = session_id
    # A2AClient makes its httpx client lazily and offers no header option:
    # hand it one with the headers set (same timeouts as its own).
    c._client = httpx.AsyncClient(
        timeout=httpx.Timeout(args.timeout, connect=10.0), headers=headers
    )
    return c


def errors_of(errors):
    """`error_count` and the first 10 messages as `errors`."""
    return {"error_count": len(errors), "errors": errors[:10]}


def final_result(events):
    """The data of the completed `message` event, or None."""
    for e in events:
        if e.status == "completed" and isinstance(e.raw.get("result"), dict):
            return e.raw["result"]
    return None


async def one_session(args, n):
    # --agent-session: turn 1 carries no sessionId; the agent (the sdk) mints
    # one, and the later turns carry the one its events named.
    sid = None if args.agent_session else str(uuid.uuid4())
    client = client_for(args, sid)
    sent, pids, ok, errors = [], [], [], []
    try:
        for t in range(args.turns):
            text = f"turn {t + 1} of session {n}"
            try:
                events = [e async for e in client.stream_message(text, session_id=sid)]
                data = final_result(events)
                if data is None:
                    raise RuntimeError(f"no result in {[e.raw for e in events]}")
                if sid is None:
                    sid = data.get("sessionId")
                    if args.session_header and sid:
                        client._client.headers["x-par-session-id"] = sid
                pids.append(data.get("pid"))
                if t > 0:
                    ok.append(data.get("remembered") == sent and data.get("sessionId") == sid)
            except Exception as e:  # counted, the run goes on
                errors.append(f"session {n} turn {t + 1}: {type(e).__name__}: {e}")
                if t > 0:
                    ok.append(False)
            sent.append(text)
    finally:
        await client.close()
    return {"sessionId": sid, "pids": pids, "history": ok, "errors": errors}


async def run_turns(args):
    results = await asyncio.gather(*(one_session(args, n) for n in range(args.sessions)))
    pids = sorted({p for r in results for p in r["pids"] if p is not None})
    return {
        "sessions": args.sessions,
        "turns_per_session": args.turns,
        "turns_sent": args.sessions * args.turns,
        "turns_total": args.sessions * max(args.turns - 1, 0),
        "turns_with_history": sum(sum(r["history"]) for r in results),
        "sessions_on_one_pid": sum(
            1 for r in results if len(r["pids"]) == args.turns and len(set(r["pids"])) == 1
        ),
        "pids": pids,
        "per_session": [
            {"sessionId": r["sessionId"], "pids": r["pids"], "history": r["history"]}
            for r in results
        ],
        **errors_of([e for r in results for e in r["errors"]]),
    }


async def ask_one(args, n):
    sid = str(uuid.uuid4())
    client = client_for(args, sid)
    try:
        events = [e async for e in client.stream_message("clarify", session_id=sid)]
    finally:
        await client.close()
    pid = next((e.raw["pid"] for e in events if "pid" in e.raw), None)
    asked = next((e.raw for e in events if e.type == "clarification_needed"), None)
    if asked is None or not asked.get("clarificationId"):
        raise RuntimeError(f"no clarification_needed in {[e.raw for e in events]}")
    return {
        "sessionId": sid,
        "clarificationId": asked["clarificationId"],
        "eventSessionId": asked.get("sessionId"),
        "askedPid": pid,
    }


async def run_ask(args):
    results = await asyncio.gather(
        *(ask_one(args, n) for n in range(args.clarifications)), return_exceptions=True
    )
    pending = [r for r in results if isinstance(r, dict)]
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, dict)]
    return {"base_url": args.base_url, "pending": pending, "errors": errors}


async def answer_one(args, p):
    client = client_for(args, p["sessionId"])
    answers = {"answer": f"answer for {p['sessionId']}"}
    try:
        if args.respond_without_session:
            # A2AClient.respond always sends params.sessionId: build the
            # request without it, read it with the sdk's own SSE reader.
            request = {
                "jsonrpc": "2.0",
                "id": str(uuid.uuid4()),
                "method": "respond",
                "params": {
                    "responseType": "clarification",
                    "clarificationId": p["clarificationId"],
                    "answers": answers,
                },
            }
            events = [e async for e in client._stream_request(request)]
            data = final_result(events)
        else:
            event = await client.respond(
                p["sessionId"],
                "clarification",
                clarificationId=p["clarificationId"],
                answers=answers,
            )
            data = event.raw.get("result")
    finally:
        await client.close()
    if not isinstance(data, dict):
        raise RuntimeError(f"no result for {p['clarificationId']}")
    return {**p, "answeredPid": data.get("pid"), "askedHere": data.get("askedHere"),
            "pendingFound": data.get("pendingFound")}


async def run_answer(args, state):
    pending = state.get("pending", [])
    results = await asyncio.gather(
        *(answer_one(args, p) for p in pending), return_exceptions=True
    )
    done = [r for r in results if isinstance(r, dict)]
    return {
        "clarifications": len(pending),
        "respond_with_session": not args.respond_without_session,
        "answered": len(done),
        "answered_by_asker": sum(
            1 for r in done if r["askedHere"] is True and r["answeredPid"] == r["askedPid"]
        ),
        "sdk_found_pending": sum(1 for r in done if r["pendingFound"] is True),
        "asked_pids": sorted({p["askedPid"] for p in pending if p.get("askedPid") is not None}),
        "answered_pids": sorted({r["answeredPid"] for r in done if r["answeredPid"] is not None}),
        "per_clarification": done,
        **errors_of(
            state.get("errors", [])
            + [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, dict)]
        ),
    }


async def run_clarify(args):
    state = await run_ask(args)
    if args.pause:
        print(json.dumps(state), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return await run_answer(args, state)


async def main(args):
    if args.mode == "turns":
        return await run_turns(args)
    if args.mode == "clarify":
        return await run_clarify(args)
    if args.mode == "ask":
        return await run_ask(args)
    if args.mode == "answer":
        raw = sys.stdin.read() if args.state == "-" else args.state
        return await run_answer(args, json.loads(raw))
    return {"turns": await run_turns(args), "clarify": await run_clarify(args)}


if __name__ == "__main__":
    out = asyncio.run(main(parse_args(sys.argv[1:])))
    print(json.dumps(out), flush=True)
