"""A pixell-sdk 0.5 agent whose app is the sdk's own AgentServer: it keeps
each conversation's turns in its own process memory, keyed by the A2A
`sessionId`, as plan-mode state and in-memory chat histories are kept.

Every `message/stream` on `POST /` (what A2AClient's send_message and
stream_message send) is answered with a result saying which process served
it and what that process remembers of the session: `{"host", "pid",
"session", "turn", "seen"}`, where `turn` is the turn number the caller says
this is (the message text) and `seen` the turns of this session this process
served before. A conversation split across processes shows up as `seen`
falling short of `turn - 1`. (`message/send` on pixell-sdk 0.5.4's
AgentServer answers `{"sessionId"}` only: the handler's events are not
returned.)
"""

import os
import socket

from pixell.sdk import AgentServer, MessageContext

HOST = socket.gethostname()
PID = os.getpid()
TURNS: dict[str, int] = {}

server = AgentServer(
    agent_id="conversation",
    name="Conversation",
    description="answers with the process that served and the session's turns it remembers",
)


@server.on_message
async def handle_message(ctx: MessageContext):
    seen = TURNS.get(ctx.session_id, 0)
    TURNS[ctx.session_id] = seen + 1
    await ctx.emit_result(
        f"{HOST}/{PID}: turn {ctx.text} of {ctx.session_id}, {seen} earlier here",
        {"host": HOST, "pid": PID, "session": ctx.session_id, "turn": ctx.text, "seen": seen},
    )


app = server.app
