"""PAR agent host: runs one agent package's Python code for the `par worker`.

Shipped inside the `par` binary and run with the package environment's
interpreter. Standard library only. It never opens a port: it talks to the
worker over an inherited Unix socket (a socketpair end) with length-prefixed
frames, so the agent's own stdout/stderr stay the agent's log lines.

Frame: u32 length (of what follows) | u8 kind | u32 request id |
       u32 header length | header (JSON, may be empty) | body (raw bytes)

Worker -> host                              Host -> worker
  1 INVOKE        body = request JSON         10 HELLO         header = load report (id 0)
  2 CALL          header = {op, ...}, body    11 RESULT_OK     body = JSON value
  3 HTTP          header = scope, body chunk  12 RESULT_ERR    header = {error, kind}
  4 BODY          body chunk, more follows    13 RESP_START    header = {status, headers}
  5 BODY_END      last body chunk             14 RESP_FULL     header = {status, headers}, body
  6 CANCEL        client gone / timed out     15 RESP_BODY     body chunk, more follows
  7 SHUTDOWN      lifespan shutdown, exit     16 RESP_END      last body chunk
  8 CREDIT        body = u32 bytes passed on  17 RESP_ERROR    header = {error, started}
  9 PING          liveness (RESULT_OK, null)
 20 WS_CONNECT    header = scope              30 WS_ACCEPT     header = {subprotocol, headers}
 21 WS_IN_TEXT    body = UTF-8 message        31 WS_OUT_TEXT   body = UTF-8 message
 22 WS_IN_BINARY  body = message              32 WS_OUT_BINARY body = message
 23 WS_DISCONNECT header = {code, reason}     33 WS_CLOSE      header = {code, reason}
                                              34 WS_CREDIT     body = u32 bytes taken

Flow control: a streamed response may have at most `window` bytes of RESP_BODY
in flight; the app's `send` waits until the worker's CREDIT frames (sent as the
client takes the bytes) open the window again, or the client goes away. A
WebSocket has a window each way: the app's messages as for a stream (CREDIT
from the worker), and the client's messages, which the worker forwards only
while the app has taken enough of them (WS_CREDIT from here). Each message
costs its length plus WS_MESSAGE_OVERHEAD.

A WebSocket refused before `websocket.accept` (close, or the app returning)
is a WS_CLOSE the worker answers with 403; a `websocket.http.response` denial
is sent as RESP_FULL.

The numbers below are the contract with the worker (`protocol.rs`, whose
test reads these lines): one `NAME = value` line each.
"""

import asyncio
import contextvars
import importlib
import importlib.util
import inspect
import json
import os
import socket
import struct
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

INVOKE = 1
CALL = 2
HTTP = 3
BODY = 4
BODY_END = 5
CANCEL = 6
SHUTDOWN = 7
CREDIT = 8
PING = 9
WS_CONNECT = 20
WS_IN_TEXT = 21
WS_IN_BINARY = 22
WS_DISCONNECT = 23
HELLO = 10
RESULT_OK = 11
RESULT_ERR = 12
RESP_START = 13
RESP_FULL = 14
RESP_BODY = 15
RESP_END = 16
RESP_ERROR = 17
WS_ACCEPT = 30
WS_OUT_TEXT = 31
WS_OUT_BINARY = 32
WS_CLOSE = 33
WS_CREDIT = 34
WS_MESSAGE_OVERHEAD = 64
EXIT_PACKAGE_FAILURE = 78

_HEAD = struct.Struct(">IBII")
_EMPTY = b""


def frame(kind, rid, header=None, body=_EMPTY):
    h = _EMPTY if header is None else json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(9 + len(h) + len(body), kind, rid, len(h)) + h + body


def describe(exc):
    """`Type: message`, the form the worker reports."""
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _finite_float(text):
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def from_json(data):
    """Strict JSON: no NaN/Infinity, and no number that overflows to one."""
    return json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)


def to_json(value):
    # allow_nan=False: a non-finite result is an error, never `Infinity` (not JSON).
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class LoadError(Exception):
    """The package's code cannot be loaded (reported to the worker, exit 78 there)."""


def resolve(ref, what):
    """Imports `module:attr` (attr may be None) and returns (module, attr value or None)."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except BaseException as e:  # noqa: BLE001 - any failure while importing agent code is a load error
        raise LoadError(f"{what} '{ref}': cannot import module '{module_name}': {describe(e)}") from e
    if not attr:
        return module, None
    try:
        return module, getattr(module, attr)
    except AttributeError:
        raise LoadError(f"{what} '{ref}': module '{module_name}' has no attribute '{attr}'") from None


def is_async(fn):
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Agent:
    """The agent's loaded code: entrypoint, exports, ASGI app, A2A handlers."""

    def __init__(self, config):
        self.config = config
        self.handler = None
        self.handler_async = False
        self.entry_module = None
        self.app = None
        self.lifespan = None
        self.state = {}
        self.a2a_handlers = None
        self.surfaces = {}

    def load(self):
        cfg = self.config
        if cfg.get("entrypoint"):
            self.entry_module, self.handler = resolve(cfg["entrypoint"], "entrypoint")
            if not callable(self.handler):
                raise LoadError(f"entrypoint '{cfg['entrypoint']}' is not callable")
            self.handler_async = is_async(self.handler)
        if cfg.get("http_server"):
            _, app = resolve(cfg["http_server"], "http_server")
            if callable(app) and not hasattr(app, "router") and not is_async(app) and _takes_no_args(app):
                app = app()  # an app factory
            if not callable(app):
                raise LoadError(f"http_server '{cfg['http_server']}' is not an ASGI app")
            self.app = app
        if cfg.get("rest"):
            mount = self.resolve_rest(cfg["rest"])
            if self.app is None:
                try:
                    from fastapi import FastAPI
                except ImportError as e:
                    raise LoadError(
                        f"rest.entry '{cfg['rest']}' needs FastAPI: add fastapi to the package's requirements ({describe(e)})"
                    ) from e
                self.app = FastAPI()
            try:
                mount(self.app)
            except BaseException as e:  # noqa: BLE001
                raise LoadError(f"rest.entry '{cfg['rest']}': mount(app) failed: {describe(e)}") from e
        if self.app is not None:
            self.surfaces["rest"] = "ready"

    def resolve_rest(self, ref):
        """The REST entry forms: `module:function`, `module` (its `mount`), or a bare
        function name in the entrypoint's module (pixell-sdk 0.5)."""
        if ":" in ref:
            _, fn = resolve(ref, "rest.entry")
        else:
            try:
                module = importlib.import_module(ref)
                fn = getattr(module, "mount", None)
                if fn is None:
                    raise LoadError(f"rest.entry '{ref}': module '{ref}' has no function 'mount'")
            except ModuleNotFoundError as e:
                if e.name != ref.split(".")[0] and e.name != ref:
                    raise LoadError(f"rest.entry '{ref}': {describe(e)}") from e
                fn = getattr(self.entry_module, ref, None) if self.entry_module else None
                if fn is None:
                    raise LoadError(
                        f"rest.entry '{ref}': no module '{ref}' and no function '{ref}' in the entrypoint's module"
                    ) from None
            except LoadError:
                raise
            except BaseException as e:  # noqa: BLE001
                raise LoadError(f"rest.entry '{ref}': cannot import module '{ref}': {describe(e)}") from e
        if not callable(fn):
            raise LoadError(f"rest.entry '{ref}' is not callable")
        return fn

    async def startup(self):
        if self.app is not None:
            self.lifespan = Lifespan(self.app, self.state)
            await self.lifespan.startup()
        ref = self.config.get("a2a")
        if ref:
            self.surfaces["a2a"] = await self.load_a2a(ref)

    async def load_a2a(self, ref):
        """Calls the A2A factory (`a2a.entry`/`a2a.service`). It may return None (the
        pixell-kit template), an object or a dict holding `custom_handlers`, or the
        handlers dict itself. A factory that blocks (it starts its own server) is
        given up on after a while: the A2A surface then reports an error."""
        _, factory = resolve(ref, "a2a entry")
        if not callable(factory):
            return f"error: a2a entry '{ref}' is not callable"
        try:
            if is_async(factory):
                result = await asyncio.wait_for(factory(), 10)
            else:
                box = {}

                def call():
                    try:
                        box["value"] = factory()
                    except BaseException as e:  # noqa: BLE001
                        box["error"] = e

                t = threading.Thread(target=call, name="par-a2a-factory", daemon=True)
                t.start()
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, t.join, 10)
                if t.is_alive():
                    return f"error: a2a entry '{ref}' did not return within 10 s (does it start its own server?)"
                if "error" in box:
                    raise box["error"]
                result = box.get("value")
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, 10)
        except asyncio.TimeoutError:
            return f"error: a2a entry '{ref}' did not return within 10 s"
        except BaseException as e:  # noqa: BLE001
            return f"error: a2a entry '{ref}' failed: {describe(e)}"
        handlers = getattr(result, "custom_handlers", None)
        if handlers is None and isinstance(result, dict):
            handlers = result.get("custom_handlers", result)
        self.a2a_handlers = dict(handlers) if isinstance(handlers, dict) else {}
        return "ready"

    async def shutdown(self):
        if self.lifespan is not None:
            await self.lifespan.shutdown()


def _takes_no_args(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values())


class Lifespan:
    """ASGI lifespan protocol: startup before serving, shutdown on exit. An app that
    does not support lifespan (raises or returns at once) is served without it."""

    def __init__(self, app, state):
        self.app = app
        self.state = state
        self.inbox = asyncio.Queue()
        self.events = asyncio.Queue()
        self.task = None
        self.supported = True

    async def startup(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self.run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        event = await self.events.get()
        if event["type"] == "lifespan.startup.failed":
            raise LoadError(f"ASGI lifespan startup failed: {event.get('message', '')}")
        if event["type"] == "unsupported":
            self.supported = False

    async def run(self, scope):
        try:
            await self.app(scope, self.inbox.get, self.events.put)
        except BaseException as e:  # noqa: BLE001
            if not isinstance(e, asyncio.CancelledError):
                print(f"par agent host: ASGI lifespan not supported: {describe(e)}", file=sys.stderr)
        await self.events.put({"type": "unsupported"})

    async def shutdown(self):
        if not self.supported or self.task is None:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.events.get(), 5)
        except asyncio.TimeoutError:
            pass


class HttpExchange:
    """One ASGI http request: the receive queue and the framed send side."""

    __slots__ = ("conn", "rid", "queue", "disconnected", "started", "pending_start", "ended", "body_done", "credit", "waiter")

    def __init__(self, conn, rid, window):
        self.conn = conn
        self.rid = rid
        self.queue = asyncio.Queue()
        self.disconnected = False
        self.started = False
        self.pending_start = None
        self.ended = False
        self.body_done = False
        self.credit = window
        self.waiter = None

    def add_credit(self, n):
        self.credit += n
        self.wake()

    def wake(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_credit(self):
        """Waits until the worker has passed on enough of the response (or the client left)."""
        while self.credit <= 0 and not self.disconnected:
            self.waiter = self.conn.loop.create_future()
            await self.waiter
        self.waiter = None

    async def receive(self):
        if self.body_done and self.queue.empty() and not self.disconnected:
            # Nothing more will come until the client goes away or the response ends.
            pass
        msg = await self.queue.get()
        return msg

    async def send(self, msg):
        if self.disconnected or self.ended:
            return
        t = msg["type"]
        if t == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.pending_start = {
                "status": int(msg["status"]),
                "headers": [[_latin1(k), _latin1(v)] for k, v in msg.get("headers", ())],
            }
        elif t == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            body = bytes(msg.get("body", b""))
            more = msg.get("more_body", False)
            conn = self.conn
            if self.pending_start is not None:
                start, self.pending_start = self.pending_start, None
                if not more:
                    self.ended = True
                    conn.send(frame(RESP_FULL, self.rid, start, body))
                    return
                conn.send(frame(RESP_START, self.rid, start))
            if more:
                if body:
                    conn.send(frame(RESP_BODY, self.rid, None, body))
                    self.credit -= len(body)
                    if self.credit <= 0:
                        await self.wait_credit()
                    else:
                        await conn.drain()
            else:
                self.ended = True
                conn.send(frame(RESP_END, self.rid, None, body))

    def cancel(self):
        """The client went away (or the worker timed the request out)."""
        self.disconnected = True
        self.wake()
        self.queue.put_nowait({"type": "http.disconnect"})

    def finish(self, error=None):
        """Called when the app returns or raises."""
        conn = self.conn
        if self.disconnected:
            return
        if error is not None:
            if not self.ended:
                self.ended = True
                conn.send(frame(RESP_ERROR, self.rid, {"error": error, "started": self.started and self.pending_start is None}))
            return
        if not self.started:
            self.ended = True
            conn.send(frame(RESP_ERROR, self.rid, {"error": "ASGI app returned without sending a response", "started": False}))
        elif not self.ended:
            self.ended = True
            if self.pending_start is not None:
                conn.send(frame(RESP_FULL, self.rid, self.pending_start))
            else:
                conn.send(frame(RESP_END, self.rid))


def _latin1(v):
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)


class ClientDisconnected(OSError):
    """`send` on a WebSocket whose client is gone (ASGI asks for an OSError)."""


class WsExchange:
    """One ASGI websocket connection: `connecting` -> `accepted` -> `closed`
    (or `connecting` -> `closed`: refused). Client messages are queued for
    `receive`, which credits them back to the worker as the app takes them;
    the app's messages go out under the worker's credit, as a stream's body."""

    __slots__ = ("conn", "rid", "queue", "window", "credit", "waiter", "taken", "state", "gone", "denial")

    def __init__(self, conn, rid, window):
        self.conn = conn
        self.rid = rid
        self.queue = asyncio.Queue()
        self.queue.put_nowait((0, {"type": "websocket.connect"}))
        self.window = window
        self.credit = window
        self.waiter = None
        self.taken = 0
        self.state = "connecting"
        self.gone = None  # the websocket.disconnect event, once the client has left
        self.denial = None  # a websocket.http.response being put together

    # -- from the worker
    def deliver(self, kind, header, body):
        size = len(body) + WS_MESSAGE_OVERHEAD
        if kind == WS_IN_TEXT:
            self.queue.put_nowait((size, {"type": "websocket.receive", "text": body.decode("utf-8")}))
        elif kind == WS_IN_BINARY:
            self.queue.put_nowait((size, {"type": "websocket.receive", "bytes": body}))
        else:
            header = header or {}
            self.client_gone(int(header.get("code", 1005)), header.get("reason", ""))

    def client_gone(self, code, reason=""):
        if self.gone is None:
            self.gone = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self.queue.put_nowait((0, self.gone))
        self.wake()

    def cancel(self):
        self.client_gone(1006)

    def add_credit(self, n):
        self.credit += n
        self.wake()

    def wake(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the app's side
    async def receive(self):
        if self.gone is not None and self.queue.empty():
            return self.gone
        size, msg = await self.queue.get()
        if size:
            self.taken += size
            if self.taken >= self.window // 4 and self.gone is None:
                self.conn.send(frame(WS_CREDIT, self.rid, None, self.taken.to_bytes(4, "big")))
                self.taken = 0
        return msg

    async def send(self, msg):
        t = msg["type"]
        conn = self.conn
        if t == "websocket.send":
            if self.state != "accepted":
                raise RuntimeError(f"websocket.send before websocket.accept or after close (state: {self.state})")
            if self.gone is not None:
                raise ClientDisconnected(f"the WebSocket client has disconnected (code {self.gone['code']})")
            text = msg.get("text")
            if text is not None:
                kind, body = WS_OUT_TEXT, text.encode("utf-8")
            else:
                kind, body = WS_OUT_BINARY, bytes(msg.get("bytes") or b"")
            conn.send(frame(kind, self.rid, None, body))
            self.credit -= len(body) + WS_MESSAGE_OVERHEAD
            if self.credit <= 0:
                while self.credit <= 0 and self.gone is None:
                    self.waiter = conn.loop.create_future()
                    await self.waiter
                self.waiter = None
            else:
                await conn.drain()
        elif t == "websocket.accept":
            if self.state != "connecting" or self.denial is not None:
                raise RuntimeError(f"websocket.accept in state {self.state}")
            if self.gone is not None:
                raise ClientDisconnected("the WebSocket client left before it was accepted")
            self.state = "accepted"
            headers = [[_latin1(k), _latin1(v)] for k, v in msg.get("headers") or ()]
            conn.send(frame(WS_ACCEPT, self.rid, {"subprotocol": msg.get("subprotocol"), "headers": headers}))
        elif t == "websocket.close":
            if self.state == "closed":
                return
            self.state = "closed"
            if self.gone is None:
                code = int(msg.get("code") or 1000)
                reason = msg.get("reason") or ""
                conn.send(frame(WS_CLOSE, self.rid, {"code": code, "reason": reason}))
                # The exchange is over for the worker: a later `receive` answers at once.
                self.client_gone(code, reason)
        elif t == "websocket.http.response.start":
            if self.state != "connecting" or self.denial is not None:
                raise RuntimeError(f"websocket.http.response.start in state {self.state}")
            headers = [[_latin1(k), _latin1(v)] for k, v in msg.get("headers", ())]
            self.denial = ({"status": int(msg["status"]), "headers": headers}, bytearray())
        elif t == "websocket.http.response.body":
            if self.denial is None:
                raise RuntimeError("websocket.http.response.body before websocket.http.response.start")
            self.denial[1].extend(msg.get("body", b""))
            if not msg.get("more_body", False):
                (head, body), self.denial = self.denial, None
                self.state = "closed"
                conn.send(frame(RESP_FULL, self.rid, head, bytes(body)))
        else:
            raise RuntimeError(f"unexpected ASGI message {t!r} on a websocket")

    def finish(self, error=None):
        """Called when the app returns or raises: a connection still open is
        closed (1000, or refused when never accepted); an error is reported."""
        if self.gone is not None or self.state == "closed":
            return
        if error is not None:
            self.conn.send(frame(RESP_ERROR, self.rid, {"error": error, "started": self.state == "accepted"}))
        else:
            self.conn.send(frame(WS_CLOSE, self.rid, {"code": 1000, "reason": ""}))
        self.state = "closed"


# -- trace context
#
# The worker sends the W3C context of its span with each request: the
# `traceparent` header of an ASGI request's scope, `trace` in the header of an
# invoke, export or A2A call. Around the agent's code it is the current
# `traceparent` (TRACEPARENT, read with `current_traceparent()`) and, when the
# agent's environment has `opentelemetry` (the API), the current
# OpenTelemetry context: spans the agent makes are children of the worker's.
# Nothing is imported until a request carries a context.

TRACEPARENT = contextvars.ContextVar("par_traceparent", default=None)
_otel_api = None  # None: not looked for yet; False: not installed


def current_traceparent():
    """The `traceparent` of the request the calling code serves, or None."""
    return TRACEPARENT.get()


def _otel():
    global _otel_api
    if _otel_api is None:
        _otel_api = False
        try:
            if importlib.util.find_spec("opentelemetry") is not None:
                from opentelemetry import context as otel_context
                from opentelemetry import propagate as otel_propagate

                _otel_api = (otel_context, otel_propagate)
        except Exception:  # noqa: BLE001 - a broken install only means no context
            _otel_api = False
    return _otel_api


def scope_carrier(headers):
    """The trace context of an ASGI request's headers (list of latin-1 pairs)."""
    carrier = None
    for k, v in headers:
        if k == "traceparent" or k == "tracestate":
            if carrier is None:
                carrier = {}
            carrier[k] = v
    return carrier if carrier and "traceparent" in carrier else None


def trace_enter(carrier):
    """Makes `carrier` ({traceparent, tracestate?}) current; the token for trace_exit."""
    if not carrier or not isinstance(carrier, dict) or not carrier.get("traceparent"):
        return None
    token = TRACEPARENT.set(carrier["traceparent"])
    otel_token = None
    api = _otel()
    if api:
        try:
            otel_token = api[0].attach(api[1].extract(carrier))
        except Exception:  # noqa: BLE001
            otel_token = None
    return (token, otel_token)


def trace_exit(tokens):
    if tokens is None:
        return
    token, otel_token = tokens
    if otel_token is not None:
        try:
            _otel_api[0].detach(otel_token)
        except Exception:  # noqa: BLE001
            pass
    try:
        TRACEPARENT.reset(token)
    except ValueError:
        pass


class Connection(asyncio.Protocol):
    """The worker side of the channel: decodes frames and dispatches them."""

    def __init__(self, agent, pool, server_port, closed):
        self.agent = agent
        self.pool = pool
        self.server_port = server_port
        self.closed = closed
        self.buf = bytearray()
        self.transport = None
        self.loop = asyncio.get_event_loop()
        self.tasks = {}
        self.exchanges = {}
        self.writable = asyncio.Event()
        self.writable.set()
        self.window = int(agent.config.get("window", 1 << 20))

    # -- transport callbacks
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    async def drain(self):
        if not self.writable.is_set():
            await self.writable.wait()

    def send(self, data):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_threadsafe(self, data):
        self.loop.call_soon_threadsafe(self.send, data)

    def data_received(self, data):
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < n:
                break
            kind, rid, hlen = struct.unpack_from(">BII", buf, pos + 4)
            h0 = pos + 13
            header = json.loads(buf[h0 : h0 + hlen]) if hlen else None
            body = bytes(buf[h0 + hlen : pos + 4 + n])
            pos += 4 + n
            try:
                self.dispatch(kind, rid, header, body)
            except Exception as e:  # noqa: BLE001 - a bad frame must not kill the host
                self.send(frame(RESULT_ERR, rid, {"error": f"agent host: {describe(e)}", "kind": "internal"}))
        if pos:
            del buf[:pos]

    # -- dispatch
    def dispatch(self, kind, rid, header, body):
        if kind == INVOKE:
            self.invoke(rid, body, (header or {}).get("trace"))
        elif kind == HTTP:
            self.http(rid, header, body)
        elif kind == BODY or kind == BODY_END:
            ex = self.exchanges.get(rid)
            if ex is not None:
                ex.queue.put_nowait({"type": "http.request", "body": body, "more_body": kind == BODY})
                ex.body_done = kind == BODY_END
        elif kind == CREDIT:
            ex = self.exchanges.get(rid)
            if ex is not None:
                ex.add_credit(int.from_bytes(body, "big"))
        elif kind == WS_IN_TEXT or kind == WS_IN_BINARY or kind == WS_DISCONNECT:
            ex = self.exchanges.get(rid)
            if ex is not None:
                ex.deliver(kind, header, body)
        elif kind == WS_CONNECT:
            self.websocket(rid, header)
        elif kind == CANCEL:
            ex = self.exchanges.get(rid)
            if ex is not None:
                ex.cancel()
            task = self.tasks.get(rid)
            if task is not None and ex is None:
                task.cancel()
        elif kind == CALL:
            self.call(rid, header, body)
        elif kind == PING:
            # Answered here, in the event loop's own callback: a loop that agent
            # code blocks (CPU, a sync sleep in async code) answers nothing.
            self.send(frame(RESULT_OK, rid, None, b"null"))
        elif kind == SHUTDOWN:
            self.loop.create_task(self.shutdown())
        else:
            raise ValueError(f"unknown frame kind {kind}")

    def invoke(self, rid, body, trace=None):
        agent = self.agent
        if agent.handler is None:
            self.send(frame(RESULT_ERR, rid, {"error": "no entrypoint is configured in agent.yaml", "kind": "no_entrypoint"}))
            return
        try:
            request = from_json(body) if body else {}
        except ValueError as e:
            self.send(frame(RESULT_ERR, rid, {"error": f"malformed JSON: {e}", "kind": "bad_request"}))
            return
        self.run_callable(rid, agent.handler, agent.handler_async, request, trace=trace)

    def run_callable(self, rid, fn, fn_async, arg, as_text=False, trace=None):
        if fn_async:
            task = self.loop.create_task(self.run_async(rid, fn, arg, as_text, trace))
            self.tasks[rid] = task
            return
        self.pool.submit(self.run_sync, rid, fn, arg, as_text, trace)

    def run_sync(self, rid, fn, arg, as_text, trace=None):
        tokens = trace_enter(trace)
        try:
            value = fn(arg)
            if inspect.isawaitable(value):
                fut = asyncio.run_coroutine_threadsafe(_await(value), self.loop)
                value = fut.result()
            data = frame(RESULT_OK, rid, None, encode_result(value, as_text))
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the caller's answer
            data = frame(RESULT_ERR, rid, {"error": describe(e), "kind": "exception"})
        finally:
            trace_exit(tokens)
        self.send_threadsafe(data)

    async def run_async(self, rid, fn, arg, as_text, trace=None):
        tokens = trace_enter(trace)
        try:
            value = await fn(arg)
            data = frame(RESULT_OK, rid, None, encode_result(value, as_text))
        except asyncio.CancelledError:
            data = frame(RESULT_ERR, rid, {"error": "cancelled", "kind": "cancelled"})
        except BaseException as e:  # noqa: BLE001
            data = frame(RESULT_ERR, rid, {"error": describe(e), "kind": "exception"})
        finally:
            self.tasks.pop(rid, None)
            trace_exit(tokens)
        self.send(data)

    def call(self, rid, header, body):
        op = header.get("op")
        trace = header.get("trace")
        agent = self.agent
        try:
            arg = from_json(body) if body else {}
        except ValueError as e:
            self.send(frame(RESULT_ERR, rid, {"error": f"malformed JSON: {e}", "kind": "bad_request"}))
            return
        if op == "export":
            name = header["name"]
            fn = getattr(agent.entry_module, name.replace("-", "_"), None) if agent.entry_module else None
            if callable(fn) and fn is not agent.handler:
                self.run_callable(rid, fn, is_async(fn), arg, trace=trace)
            elif agent.handler is not None:
                request = {"action": name, **arg} if isinstance(arg, dict) else {"action": name, "data": arg}
                self.run_callable(rid, agent.handler, agent.handler_async, request, trace=trace)
            else:
                self.send(frame(RESULT_ERR, rid, {"error": f"export '{name}' has no function and no entrypoint is configured", "kind": "not_found"}))
        elif op == "a2a_actions":
            handlers = agent.a2a_handlers or {}
            self.send(frame(RESULT_OK, rid, None, to_json(sorted(handlers))))
        elif op == "a2a_invoke":
            action = header.get("action", "")
            fn = (agent.a2a_handlers or {}).get(action)
            if fn is None:
                self.send(frame(RESULT_ERR, rid, {"error": f"unknown action '{action}'", "kind": "not_found"}))
            else:
                self.run_callable(rid, fn, is_async(fn), arg, as_text=True, trace=trace)
        else:
            self.send(frame(RESULT_ERR, rid, {"error": f"unknown operation {op!r}", "kind": "internal"}))

    def scope(self, header, kind):
        """The ASGI scope of an `http` or `websocket` request from the worker's header."""
        raw_path = header["path"]
        client = header.get("client")
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4" if kind == "websocket" else "2.3"},
            "http_version": header.get("version", "1.1"),
            "scheme": "ws" if kind == "websocket" else "http",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": header.get("query", "").encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in header["headers"]],
            "client": (client[0], client[1]) if client else None,
            "server": ("127.0.0.1", self.server_port),
            "state": dict(self.agent.state),
        }

    def http(self, rid, header, body):
        agent = self.agent
        if agent.app is None:
            self.send(frame(RESULT_ERR, rid, {"error": "no ASGI app", "kind": "not_found"}))
            return
        ex = HttpExchange(self, rid, self.window)
        more = header.get("more", False)
        ex.queue.put_nowait({"type": "http.request", "body": body, "more_body": more})
        ex.body_done = not more
        scope = self.scope(header, "http")
        scope["method"] = header["method"]
        self.exchanges[rid] = ex
        self.loop.create_task(self.run_app(agent.app, scope, ex))

    def websocket(self, rid, header):
        agent = self.agent
        if agent.app is None:
            self.send(frame(RESULT_ERR, rid, {"error": "no ASGI app", "kind": "not_found"}))
            return
        scope = self.scope(header, "websocket")
        scope["subprotocols"] = [
            p.strip() for k, v in header["headers"] if k == "sec-websocket-protocol" for p in v.split(",") if p.strip()
        ]
        scope["extensions"] = {"websocket.http.response": {}}
        ex = WsExchange(self, rid, self.window)
        self.exchanges[rid] = ex
        self.loop.create_task(self.run_app(agent.app, scope, ex))

    async def run_app(self, app, scope, ex):
        tokens = trace_enter(scope_carrier(_header_pairs(scope)))
        try:
            await app(scope, ex.receive, ex.send)
            ex.finish()
        except asyncio.CancelledError:
            ex.finish("cancelled")
        except BaseException as e:  # noqa: BLE001
            if not isinstance(e, ClientDisconnected) and getattr(ex, "gone", None) is None:
                traceback.print_exc()
            ex.finish(describe(e))
        finally:
            self.exchanges.pop(ex.rid, None)
            trace_exit(tokens)

    async def shutdown(self):
        try:
            await asyncio.wait_for(self.agent.shutdown(), 5)
        except BaseException:  # noqa: BLE001
            pass
        if not self.closed.done():
            self.closed.set_result(None)


def _header_pairs(scope):
    """The trace headers of a scope as str pairs (only those two are decoded)."""
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in scope.get("headers", ())
        if k == b"traceparent" or k == b"tracestate"
    ]


async def _await(value):
    return await value


def encode_result(value, as_text):
    if as_text:
        # A2A: the handler's return as a string (JSON for anything else).
        return (value if isinstance(value, str) else to_json(value).decode()).encode()
    return to_json(value)


async def main():
    config = json.loads(sys.argv[1])
    root = config.get("root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    fd = int(config.get("fd", 3))
    sock = socket.socket(family=socket.AF_UNIX, type=socket.SOCK_STREAM, fileno=fd)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=int(config.get("threads", 64)), thread_name_prefix="par-handler")
    agent = Agent(config)
    closed = loop.create_future()
    _, conn = await loop.create_unix_connection(
        lambda: Connection(agent, pool, int(config.get("port", 0)), closed), sock=sock
    )
    try:
        agent.load()
        await agent.startup()
    except BaseException as e:  # noqa: BLE001 - reported to the worker, which exits 78
        if isinstance(e, LoadError):
            message = str(e)
        else:
            message = f"loading the agent failed: {describe(e)}"
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        conn.send(frame(HELLO, 0, {"ok": False, "error": message}))
        # Closing flushes what is buffered; the worker must read the reason
        # before the process ends.
        conn.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(closed), 2)
        except asyncio.TimeoutError:
            pass
        return EXIT_PACKAGE_FAILURE
    conn.send(
        frame(
            HELLO,
            0,
            {
                "ok": True,
                "python": sys.version.split()[0],
                "entrypoint": agent.handler is not None,
                "asgi": agent.app is not None,
                "surfaces": agent.surfaces,
                "a2a_actions": sorted(agent.a2a_handlers or {}),
            },
        )
    )
    await closed
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
