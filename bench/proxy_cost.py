#!/usr/bin/env python3
"""What one proxied request costs the proxy, in user-space instructions:
PAR's supervisor beside nginx, each run under valgrind's callgrind.

Throughput on this kind of machine (2 shared cores) moves by 20-30 % from
run to run; instruction counts do not: the same binary and the same
requests give the same count whatever else the machine is doing. So this
is the figure to compare two builds by, or PAR with nginx.

For each proxy: start it under callgrind in front of one echo worker (the
supervisor's own; nginx proxies to that same worker), send a warm-up, zero
the counters, send N and then 3N requests over 8 keep-alive connections,
and dump the counters after each. (count(3N) - count(N)) / 2N is the cost
of one request, without start-up and connection set-up. Kernel time (the
socket calls, the wake-ups) is not counted: both proxies make the same four
socket calls per request (read client, write worker, read worker, write
client), measured with strace. Each thread is counted apart, and for PAR
only the proxy thread (the one running serve_direct; PAR_PROXY_THREADS
defaults to 1) is summed: the other threads' work (health probes, /proc
and disk sampling of every worker) goes with time, not with requests, and
made the figure move by 30 % from run to run with five workers. The same
row still moves by 2-4 % between rounds at 8 connections (how requests and
replies fall into reads and wake-ups), by 1-2 % at --conns 1: --rounds R
gives the median of R n/3n pairs.

The rows: GET /health and POST /invoke (today's plain request; nginx too),
the same invoke with a chunked body (the direct path hands such a request
to the general one, hyper, which serves the connection from then on: the
general path's cost), then an A2A JSON-RPC message/send (POSTed to
/invoke, which the echo worker answers, echoing the body) with no session
key; with a messageId in its message, as A2A clients send (no key); with a
key in params.sessionId; with one in the x-par-session-id header (one key per connection: a
conversation going on; "new body key": a new key every request, a
conversation starting), to three agents on the same echo package:
  echo          1 replica, handler only: sessions not tracked (auto);
  echo-off      replicas = 2, sessions = "off": not tracked;
  echo-tracked  replicas = 2: tracked.
Each row is also given over today's invoke row, and with --before BINARY
over the same row of another build (a build before the sessions setting
runs echo-off as a second echo-tracked). --dumps DIR keeps each row's
dumps of the counted threads (ROW.n, ROW.3n): bench/cost_breakdown.py
gives each function's cost per request from them (and a row's difference
from another).

--tracing measures --par again with traces on and every request sampled
(OTEL_EXPORTER_OTLP_ENDPOINT at a stand-in collector in this script that
answers 200 to each POST /v1/traces and discards the protobuf body;
OTEL_TRACES_SAMPLER=always_on), on the rows of TRACE_ROWS, against the same
rows with tracing off. With tracing on the direct path serves what it
serves with tracing off (each request's span built there, the worker given
its traceparent) and a chunked request still goes to the general path; the
proxy thread is the one running serve_direct either way. The exporter's
own thread (par-otlp-export) is not in the figure and is given beside it.
The workers get the OTEL_* variables too and export their own spans (other
processes: not counted). The rows with tracing off are run with no OTEL_*
variable at all.

Usage: bench/proxy_cost.py [--par BINARY] [--before BINARY] [-n N] [--conns C]
                           [--rounds R] [--no-nginx] [--tracing] [--json FILE]
                           [--dumps DIR] [--rows ROW,...]
Needs valgrind (Debian: valgrind) and nginx; takes about 1.5 minutes per
binary (--rounds 5, --before and nginx: about 8); --rows measures only the
rows named (and the invoke row the others are given over). Before the rows it checks
that a request with a key to echo-tracked comes back with that key in
x-par-session-id (each conversation from one process) and one to the
others without it.

Figures at 483cc1d (sessions' cheaper keys 76e80ec, traces 895859d), a
loaded 2-core machine (load average 2-6), instructions per request, the
median of 3 rounds; "/before inv": over the invoke row of a build before
the sessions setting (6e3ab46~1):
                                 8 connections          1 connection
  request        agent           PAR  /before inv     PAR  /before inv
  health         echo          14339     0.94       15937     0.94
  invoke         echo          15308     1.00       18084     1.07
  invoke chunked echo          64411     4.20       66152     3.91
  rpc            echo          16524     1.08       17484     1.03
  rpc+messageId  echo          16720     1.09       17737     1.05
  rpc+body key   echo          16269     1.06       17735     1.05
  rpc+header key echo          16927     1.10       18445     1.09
  rpc            echo-off      15972     1.04       17672     1.04
  rpc+body key   echo-off      16286     1.06       17946     1.06
  rpc+header key echo-off      16781     1.09       19859     1.17
  rpc            echo-tracked  16967     1.11       19174     1.13
  rpc+messageId  echo-tracked  22685     1.48       24669     1.46
  rpc+body key   echo-tracked  25217     1.65       26475     1.56
  rpc+header key echo-tracked  19134     1.25       20711     1.22
  rpc+new body k echo-tracked  25994     1.70       27188     1.61
  (before's invoke row: 15327 at 8 connections, one round; 16937 at 1.)
The POST rows' rounds spread by 5-10 % on that machine even at
--conns 1 (health's by 0.1 %): read differences under 5 % as noise.
What invoke gained since before (+1240 in one --conns 1 round, with
cost_breakdown.py --vs) is the forwarding rules' move to proxy/policy.rs
(bf4e85a: policy::kind, HeadOut::add_parts), not sessions: they add about
200 to an untracked agent's request (tracks_sessions, the 'Id"' search).
Sessions' rows with cfb869d's sessions code (a build of 284be9d with
it: the body's session fields read by sessions/skim.rs, not serde_json;
keys shared as Arc<str>; the reply watch's seam kept in place; e64434d's
traced direct path not in it), median of 3, the same run's before-build
("/bi": over its invoke row, 15120 at 8 connections, 17363 at 1; "/br":
over its same row):
                                 8 connections          1 connection
  request        agent           PAR   /bi   /br        PAR   /bi   /br
  rpc            echo          15592  1.03  1.05      18198  1.05  1.06
  rpc            echo-off      15903  1.05  1.03      18357  1.06  1.05
  rpc            echo-tracked  16365  1.08  1.06      18804  1.08  1.07
  rpc+messageId  echo-tracked  17006  1.12  1.09      19420  1.12  1.12
  rpc+body key   echo-tracked  21906  1.45  1.39      24304  1.40  1.38
  rpc+header key echo-tracked  17857  1.18  1.12      19693  1.13  1.11
  rpc+new body k echo-tracked  22724  1.50  1.47      24208  1.39  1.38
(invoke itself is 1.05 over before's in both: the forwarding rules, above.)
Issue 27's goals (no key <= 1.05, a key <= 1.25) are not met by the
tracked rows without a key (1.08) and with a body key (1.40-1.45); the
header key meets its goal. Down from 1.11-1.13, 1.56-1.65, 1.22-1.25.
With cost_breakdown.py (--conns 1, one round): a tracked agent's request
without a key pays the reply's watch (Watch::feed, about 350: the 'Id"'
search over the reply, its last bytes kept for the next chunk) over
echo-off; a key in the header adds about 1300 (Sessions::place about
500: the SipHash of the key, the table's lock, Instant::now; the header
parsed and written back); a key in the body about 4000 more: the skim of
the body (about 4000 for these 190 bytes, where serde_json took 6000:
Skim::string about 1750 for its 16 strings, skip_value 800, the two
levels 800, the key's check 290) and tracks_sessions (300: the route
table read before the skim).
With 1d107d4's skimmer (a build of f33f27e with it: free functions over
(body, offset), whitespace's common cases first, a string or number
skipped inline at the levels, UTF-8 checked only in a string read with a
byte outside ASCII, the key's check eight bytes a step), median of 3, the
same run's before-build (its invoke row 15269 at 8 connections, 16981 at 1):
                                 8 connections          1 connection
  request        agent           PAR   /bi   /br        PAR   /bi   /br
  rpc            echo          16026  1.05  1.06      17626  1.04  1.03
  rpc            echo-off      16291  1.07  1.05      17842  1.05  1.00
  rpc            echo-tracked  16834  1.10  1.08      18527  1.09  1.08
  rpc+messageId  echo-tracked  16993  1.11  1.11      18932  1.11  1.11
  rpc+body key   echo-tracked  20434  1.34  1.32      22229  1.31  1.31
  rpc+header key echo-tracked  17998  1.18  1.13      19993  1.18  1.08
  rpc+new body k echo-tracked  21285  1.39  1.37      23284  1.37  1.34
A body key is down from 1.40-1.45 to 1.31-1.34 and still over its 1.25;
the tracked rows without a key (1.09-1.10) are within their spread of
57cb82f's 1.08 and still over 1.05. cost_breakdown.py (--conns 1, one
round, body key --vs header key: +2288): key::named 2450 (was about
4000): the skim 2090 (skip_value 720 of it, for the message object's 60
bytes; the two levels with their six names and four values about 1200),
the key's check 280 (from_utf8 120 of it); tracks_sessions still 300.
9c33a97 takes about 110 more off the skim (names compared as arrays of
their length, the fields written in place; measured on the skim alone,
not yet in this table). What remains is about 35 instructions a token
(60 tokens, 16 strings in 186 bytes): the goal needs the skim under
about 750 (8 connections) to 1100 (1): a different scan (the strings'
and the structure's positions found eight bytes a step, then the tokens
checked from those), not this one made tighter.
At b46dd73 (the skim's strings found sixteen bytes a step with SSE2, a
key not checked twice; the route table read once per request and kept
per connection while the table stands; whether an agent tracks sessions
read through an atomic before its body is searched; header lines copied
from the head in runs), --conns 1, median of 3, a quiet machine, the
same run's before-build (its invoke row 16801; "/br": over its same row,
"/bi": over its invoke row; each row's rounds within 1 % of each other,
but new body key's, 20792-22106):
  request          agent           PAR   /br   /bi
  health           echo          15639  1.00  0.93
  invoke           echo          16706  0.99  0.99
  invoke chunked   echo          66106  1.02  3.93
  rpc              echo          16627  1.00  0.99
  rpc              echo-off      16777  0.99  1.00
  rpc+header key   echo-off      17548  1.01  1.04
  rpc              echo-tracked  17804  1.04  1.06
  rpc+messageId    echo-tracked  18116  1.06  1.08
  rpc+body key     echo-tracked  20736  1.21  1.23
  rpc+header key   echo-tracked  18947  1.08  1.13
  rpc+new body key echo-tracked  21584  1.26  1.29
Issue 29's untracked rows are back to the before-build's (health 0.997,
invoke 0.994; they were 1.03 and 1.045 at f62ba0c in one run: each head
line written in four copies through a Vec::extend_from_slice the
compiler no longer inlined, the route table read and its id hashed on
every request (twice for a tracked agent's body), an untracked agent's
body searched for a session all the same). Issue 27: a
tracked agent's request without a key is 1.04 over the same row (goal
1.05; 1.06 over before's invoke), a body key 1.21 (1.23; goal 1.25); a
new key every request (a binding made each time) 1.26-1.29 and a body
with a messageId 1.06-1.08 are still over. cost_breakdown.py (this
run): tracked without a key over echo-off +1040: the reply's Watch
(built, moved into place: memcpy 225, memset 35, dropped 50), the 'Id"'
searches of the body and the reply (250), Interactions::scan/feed 120;
a body key over that +2960: key::named 1990 (the skim 1880 of it,
skip_value 680 for the message object; measured alone: 2289 -> 2040,
the goal's 1000 not reached), Sessions::place 505 (SipHash 240).
At 34c1b5e (a connection's reply Watch built once and reset in place,
not built, zeroed and moved per request), the rows that move, another
run the same way (before's invoke 16720):
  request          agent           PAR   /br   /bi
  health           echo          15626  1.00  0.93
  invoke           echo          16617  0.99  0.99
  rpc              echo-tracked  17622  1.03  1.05
  rpc+messageId    echo-tracked  17928  1.05  1.07
  rpc+body key     echo-tracked  20562  1.21  1.23
  rpc+header key   echo-tracked  18730  1.07  1.12
  rpc+new body key echo-tracked  21220  1.25  1.27
Without a key a tracked agent's request is 1.029 over its same row (the
goal's 1.05 met) and 1.054 over before's invoke (just over); a body key
1.21-1.23 (met); a new key every request (20562-21908 over the rounds)
and a messageId body over before's invoke (1.07) still over theirs.
With --tracing (8 connections, median of 3), off -> on (on/off), proxy
thread only, at ff878f5 (spans reused, their strings in their own text,
the exporter woken per batch, the protobuf written straight from the
spans): health 14341 -> 16841 (1.17), invoke 16191 -> 18396 (1.14),
invoke chunked 64136 -> 69417 (1.08, the general path), rpc 16021 ->
18344 (1.15), tracked rpc+body key 20577 -> 23794 (1.16), rpc+header key
18113 -> 21314 (1.18); the exporter thread another 3900-5000 per request
(span), not counted. A sampled span costs the
direct path about 2200-3200 instructions: the +15 % goal is met by invoke
and rpc, not quite by health and the tracked rows (1.16-1.18). Where it
goes (cost_breakdown.py --vs, invoke): starting the span 300 (two random
ids, the sampler, a reused span from the exporter's list, its name
written), the clock 350 (three SystemTime reads, two Instant::elapsed),
the attributes and the event 700 (add/add_text, the event's attributes
cloned), the worker's traceparent written 120, url.path's split at '?'
in wire::parse_request 100-190. No allocation is left on the proxy
thread once the exporter has handed spans back (before: nine a span, most
of them missing the thread's cache, as the exporter freed them).
At 6c909c7 (before): health 14330 -> 18937 (1.32), invoke 15782 ->
20112 (1.27), chunked 64165 -> 73119 (1.14), rpc 16163 -> 20537 (1.27),
tracked rpc+body key 22277 -> 27691 (1.24), rpc+header key 18260 ->
23544 (1.29); the exporter 18000-29000 a span (conversion to prost's
messages, a String a value, and a wake-up a span). At 483cc1d (every
traced connection handed to the general path): health 62113 (4.33),
invoke 67196 (4.39), rpc 67500 (4.09), tracked rpc+body key 79649
(3.16), rpc+header key 75793 (3.96), the exporter 22000-29000.
"""

import argparse
import http.client
import http.server
import json
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid

from benchlib import NGINX_CONF, ROOT, Callgrind, free_port, read, wait_for

AGENT = "echo"
INVOKE = json.dumps({"action": "echo", "data": {"text": "x" * 150}})
# The agents whose sessions are tracked, and not (see ROWS).
TRACKED = "echo-tracked"
OFF = "echo-off"


def rpc_body(session=None, message_id=None):
    """An A2A JSON-RPC message/send, naming `session` in params.sessionId when
    given (and the message's messageId, as A2A clients send one, when given)."""
    params = {} if session is None else {"sessionId": session}
    params["message"] = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
    if message_id:
        params["message"]["messageId"] = message_id
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": params})


class Ask:
    """One kind of request: its method and path under the agent, its body, and
    where its session key goes (`key`: None; "body": params.sessionId, one key
    per connection, a conversation going on; "header": x-par-session-id, one
    per connection; "body-new": params.sessionId, a new key every request, a
    conversation starting)."""

    def __init__(self, path, body=None, key=None, chunked=False):
        self.path, self.body, self.key, self.chunked = path, body, key, chunked

    def request(self, conn_key):
        """(method, path, body, headers) of one request on a connection whose key is `conn_key`."""
        if self.body is None and self.key is None:
            return "GET", self.path, None, {}
        headers = {"Content-Type": "application/json"}
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        if self.key is None:
            return "POST", self.path, self.body, headers
        if self.key == "body":
            return "POST", self.path, rpc_body(conn_key), headers
        if self.key == "body-new":
            return "POST", self.path, rpc_body(uuid.uuid4().hex), headers
        headers["x-par-session-id"] = conn_key
        return "POST", self.path, rpc_body(), headers


HEALTH = Ask("/health")
PLAIN = Ask("/invoke", INVOKE)
# The same invoke with a chunked body: the direct path hands it to the
# general one (hyper), which serves the connection from then on.
CHUNKED = Ask("/invoke", INVOKE, chunked=True)
# The JSON-RPC requests go to /invoke: the echo worker answers them there
# (200, the body echoed), and the supervisor's work does not depend on the path.
RPC = {"none": Ask("/invoke", rpc_body()), "messageId": Ask("/invoke", rpc_body(message_id=str(uuid.uuid4()))),
       "body": Ask("/invoke", key="body"),
       "header": Ask("/invoke", key="header"), "body-new": Ask("/invoke", key="body-new")}


def log(msg):
    print(f"proxy_cost: {msg}", file=sys.stderr, flush=True)


def load(port, prefix, ask, n, conns=8):
    """`n` requests over `conns` keep-alive connections, each with a session key
    of its own; the count of non-200 answers."""
    errors = []

    def run(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        key = str(uuid.uuid4())
        for _ in range(k):
            method, path, body, headers = ask.request(key)
            c.request(method, prefix + path, body, headers, encode_chunked="Transfer-Encoding" in headers)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)

    threads = [threading.Thread(target=run, args=(n // conns,)) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(errors)


def answers(port, path):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        return c.getresponse().status == 200
    except OSError:
        return False


def per_request(cg, port, prefix, ask, n, conns, rounds=1, keep=None, apart=None):
    """Instructions per request: the marginal cost between n and 3n requests,
    the median of `rounds` such pairs; (median, every round's, every round's
    counted over all threads). `keep`: a path prefix the last pair's dumps
    are copied to (.n and .3n). `apart`: a dict given each of cg.apart's
    threads' instructions per request, every round's."""
    if load(port, prefix, ask, 50, conns):
        raise SystemExit(f"{prefix}{ask.path} failed during the warm-up")
    cg.dump()
    each, every = [], []
    for _ in range(rounds):
        errs = load(port, prefix, ask, n, conns)
        small = cg.dump(keep and f"{keep}.n")
        small_apart = dict(cg.last)
        errs += load(port, prefix, ask, 3 * n, conns)
        large = cg.dump(keep and f"{keep}.3n")
        if errs:
            raise SystemExit(f"{errs} requests to {prefix}{ask.path} failed")
        if cg.marker and max(small_apart["threads counted"], cg.last["threads counted"]) > 1:
            log(f"{prefix}{ask.path}: more than one thread ran {cg.marker}: "
                f"{small_apart['threads counted']}, {cg.last['threads counted']} counted")
        for name in cg.apart:
            if apart is not None:
                apart.setdefault(name, []).append((cg.last[name] - small_apart[name]) / (2 * n))
        each.append((large[0] - small[0]) / (2 * n))
        every.append((large[1] - small[1]) / (2 * n))
    return statistics.median(each), each, every


# The rows: (name, agent, request, what the agent is). "today" is the plain
# invoke row the comparisons are made against.
ROWS = [
    ("health", AGENT, HEALTH, "1 replica, handler only: not tracked"),
    ("invoke", AGENT, PLAIN, "1 replica, handler only: not tracked"),
    ("invoke chunked", AGENT, CHUNKED, "1 replica, handler only: not tracked"),
    ("rpc", AGENT, RPC["none"], "not tracked (1 replica, handler only)"),
    ("rpc+messageId", AGENT, RPC["messageId"], "not tracked (1 replica, handler only)"),
    ("rpc+body key", AGENT, RPC["body"], "not tracked (1 replica, handler only)"),
    ("rpc+header key", AGENT, RPC["header"], "not tracked (1 replica, handler only)"),
    ("rpc", OFF, RPC["none"], 'not tracked (replicas = 2, sessions = "off")'),
    ("rpc+body key", OFF, RPC["body"], 'not tracked (replicas = 2, sessions = "off")'),
    ("rpc+header key", OFF, RPC["header"], 'not tracked (replicas = 2, sessions = "off")'),
    ("rpc", TRACKED, RPC["none"], "tracked (replicas = 2)"),
    ("rpc+messageId", TRACKED, RPC["messageId"], "tracked (replicas = 2)"),
    ("rpc+body key", TRACKED, RPC["body"], "tracked (replicas = 2)"),
    ("rpc+header key", TRACKED, RPC["header"], "tracked (replicas = 2)"),
    ("rpc+new body key", TRACKED, RPC["body-new"], "tracked (replicas = 2)"),
]
NGINX_ROWS = ("health", "invoke", "rpc")
# The rows measured again with tracing on (--tracing).
TRACE_ROWS = [(AGENT, "health"), (AGENT, "invoke"), (AGENT, "invoke chunked"), (AGENT, "rpc"),
              (TRACKED, "rpc+body key"), (TRACKED, "rpc+header key")]
# The proxy thread: the one running serve_direct, tracing on or off (a
# connection for the general path is handed over from there; a build before
# the direct path served traced requests handed every one over at once). The
# exporter's thread is summed apart.
TRACED_MARKER = "serve_direct"
EXPORTER_MARKER = "trace::export::"


class Receiver:
    """A stand-in OTLP/HTTP collector: 200 to every POST to /v1/traces, the
    (protobuf) body read and discarded; counts the POSTs and their bytes."""

    def __init__(self):
        seen = self.seen = {"posts": 0, "bytes": 0, "other": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size)
                if self.path == "/v1/traces":
                    seen["posts"] += 1
                    seen["bytes"] += len(body)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                else:
                    seen["other"] += 1
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def knows_sessions(par):
    """Whether the binary has the `sessions` setting (a build before it refuses the key)."""
    with open(par, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(b"session_idle_timeout") >= 0


def wanted(agent, name, only):
    """Whether the row is measured: every row when `only` is empty, else
    those it names (by NAME or AGENT:NAME) and the invoke row (the one the
    others are given over)."""
    return (not only or (agent, name) == (AGENT, "invoke") or name in only
            or f"{agent}:{name}" in only)


def measure_par(par, label, n, conns, rounds, nginx=False, dumps=None, tracing=None, only=()):
    """Every row of ROWS on one supervisor running `par` (and nginx's rows
    when `nginx`): {row key: (median, all)}. `dumps`: a folder the callgrind
    dumps of each row are kept in. `tracing`: a dict: the rows of TRACE_ROWS
    only, with traces exported to a Receiver and every request sampled;
    the dict is given the exporter thread's instructions per request of
    each row and what the receiver got. `only`: the rows measured (`wanted`)."""
    sessions = knows_sessions(par)
    result = {}
    with tempfile.TemporaryDirectory(prefix="par-cost-") as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        cfg = os.path.join(tmp, "cost.toml")
        # A block of worker ports of its own: two runs at once do not collide.
        wp = random.randrange(20000, 30000, 100)
        package = os.path.join(ROOT, "examples", "agents", AGENT)
        with open(cfg, "w") as f:
            f.write(f'[supervisor]\nport = {port}\nworker_ports = "{wp}-{wp + 99}"\n\n'
                    f'[[agents]]\nid = "{AGENT}"\npackage = "{package}"\n\n'
                    f'[[agents]]\nid = "{TRACKED}"\npackage = "{package}"\nreplicas = 2\n\n'
                    f'[[agents]]\nid = "{OFF}"\npackage = "{package}"\nreplicas = 2\n'
                    + ('sessions = "off"\n' if sessions else ""))
        if not sessions:
            log(f"{label}: {par} has no sessions setting: {OFF} is the same as {TRACKED} there")
        # Under valgrind the agents keep the supervisor's uid (a uid change is
        # not what is measured here).
        # The admin port on a free one: two runs at once collided on 8900.
        env = dict(os.environ, PAR_HOME=os.path.join(tmp, "home"), PAR_LOG="warn", PAR_AGENT_UIDS="off",
                   PAR_ADMIN_PORT="0")
        for var in [v for v in env if v.startswith("OTEL_")]:
            del env[var]
        receiver = None
        if tracing is not None:
            receiver = Receiver()
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                       OTEL_TRACES_SAMPLER="always_on")
            sup = Callgrind([par, "supervisor", "--config", cfg], tmp, env, marker=TRACED_MARKER,
                            apart={"exporter": EXPORTER_MARKER})
        else:
            sup = Callgrind([par, "supervisor", "--config", cfg], tmp, env, marker="serve_direct")
        try:
            want = {AGENT: 1, TRACKED: 2, OFF: 2}
            if not wait_for(lambda: sup.proc.poll() is not None or ready_counts(port) == want, 180, 0.5) \
                    or sup.proc.poll() is not None:
                raise SystemExit(f"the supervisor under valgrind did not run {want} ready replicas; "
                                 f"its log:\n{read(os.path.join(tmp, 'valgrind.log'))[-2000:]}")
            if sessions:
                check_sessions(port)
            for name, agent, ask, _ in ROWS:
                if tracing is not None and (agent, name) not in TRACE_ROWS:
                    continue
                if not wanted(agent, name, only):
                    continue
                key = f"{agent}:{name}"
                keep = dumps and os.path.join(dumps, f"{label}-{agent}-{name}".replace(" ", "_").replace("+", "-"))
                apart = {}
                result[key] = per_request(sup, port, f"/agents/{agent}", ask, n, conns, rounds, keep, apart)
                extra = ""
                if tracing is not None:
                    tracing[key] = {k: statistics.median(v) for k, v in apart.items()}
                    extra = f" (exporter thread, not counted: {tracing[key]['exporter']:.0f})"
                log(f"{label:6} {agent:12} {name:16} {result[key][0]:>9.0f} instructions per request{extra}")
            if receiver:
                tracing["receiver"] = dict(receiver.seen)
                log(f"{label}: the receiver got {receiver.seen}")
                if not receiver.seen["posts"]:
                    raise SystemExit("tracing on, but no spans reached the receiver")
            if nginx:
                worker = worker_port(port)
                result.update(measure_nginx(tmp, worker, n, conns, rounds, only))
        finally:
            sup.stop()
            if receiver:
                receiver.stop()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--par", help="par binary (default: build the release one)")
    ap.add_argument("--before", help="a second par binary (an older build) measured on the same rows")
    ap.add_argument("-n", type=int, default=800, help="requests in the smaller batch (default 800)")
    ap.add_argument("--conns", type=int, default=8,
                    help="keep-alive connections the requests share (default 8; 1: one request at a time)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="n/3n pairs per row, the median reported (default 1)")
    ap.add_argument("--no-nginx", action="store_true", help="measure PAR only")
    ap.add_argument("--tracing", action="store_true",
                    help="also measure --par with tracing on, every request sampled (TRACE_ROWS)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--dumps", help="keep each row's callgrind dumps in this folder (for callgrind_annotate)")
    ap.add_argument("--rows", default="",
                    help="comma-separated rows to measure, each NAME or AGENT:NAME (e.g. "
                         "'health,echo-tracked:rpc+body key'); the echo invoke row always (default: all)")
    args = ap.parse_args()
    only = {r.strip() for r in args.rows.split(",") if r.strip()}
    unknown = [r for r in only if not any(r in (name, f"{agent}:{name}") for name, agent, _, _ in ROWS)]
    if unknown:
        raise SystemExit(f"no such row: {', '.join(unknown)}")
    for tool in ("valgrind", "callgrind_control") + (() if args.no_nginx else ("nginx",)):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is needed (Debian: apt-get install valgrind nginx)")
    par = args.par
    if not par:
        log("building par (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "par"], cwd=ROOT, check=True)
        par = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "par")
    if args.dumps:
        os.makedirs(args.dumps, exist_ok=True)
    result = measure_par(par, "PAR", args.n, args.conns, args.rounds, not args.no_nginx, args.dumps,
                         only=only)
    traced, exporter = {}, {}
    if args.tracing:
        traced = measure_par(par, "traced", args.n, args.conns, args.rounds, False, args.dumps, exporter,
                             only=only)
    before = measure_par(args.before, "before", args.n, args.conns, args.rounds, False,
                         args.dumps, only=only) if args.before else {}
    report(result, before, args)
    if traced:
        report_tracing(result, traced, exporter)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"par": par, "before": args.before, "n": args.n, "conns": args.conns,
                       "rounds": args.rounds, "result": result, "before_result": before,
                       "traced_result": traced, "traced_exporter": exporter}, f, indent=2)


def report_tracing(result, traced, exporter):
    print("\ntracing on (OTLP/HTTP to a local receiver, OTEL_TRACES_SAMPLER=always_on) against off, "
          "same binary; the proxy thread only")
    print(f"{'request':17} {'agent':13} {'off':>9} {'on':>9} {'on/off':>7} {'exporter':>9}")
    for agent, name in TRACE_ROWS:
        key = f"{agent}:{name}"
        if key not in traced:
            continue
        off, on = result[key][0], traced[key][0]
        print(f"{name:17} {agent:13} {off:>9.0f} {on:>9.0f} {on / off:>7.3f} {exporter[key]['exporter']:>9.0f}")
    print("(exporter: the par-otlp-export thread's instructions per request, not in 'on'; "
          f"the receiver got {exporter['receiver']})")


def report(result, before, args):
    today = result[f"{AGENT}:invoke"][0]
    print(f"\nuser-space instructions per proxied request (callgrind; {args.n}/{3 * args.n} requests, "
          f"{args.conns} connections, median of {args.rounds})")
    cols = f"{'request':17} {'agent':13} {'PAR':>9} {'/today':>7}"
    if before:
        before_today = before[f"{AGENT}:invoke"][0]
        cols += f" {'before':>9} {'/before':>7} {'/b.inv':>7}"
    cols += f" {'nginx':>9} {'PAR/nginx':>9}"
    print(cols)
    for name, agent, _, _ in ROWS:
        key = f"{agent}:{name}"
        if key not in result:
            continue
        v = result[key][0]
        line = f"{name:17} {agent:13} {v:>9.0f} {v / today:>7.3f}"
        if before:
            b = before[key][0]
            line += f" {b:>9.0f} {v / b:>7.3f} {v / before_today:>7.3f}"
        ng = result.get(f"nginx:{name}") if agent == AGENT else None
        line += f" {f'{ng[0]:.0f}' if ng else '-':>9} {f'{v / ng[0]:.2f}' if ng else '-':>9}"
        print(line)
    print(f"(/today: over the {AGENT} invoke row of the same binary"
          + ("; /before: over the same row of --before; /b.inv: over its invoke row" if before else "")
          + ")")
    print("agents: " + "; ".join(f"{a}: {what}" for a, what in
                                 dict((a, w) for _, a, _, w in ROWS).items()))
    print(json.dumps({k: v[0] for k, v in result.items()}))


def check_sessions(port):
    """The rows measure what they say: a request with a key to the tracked
    agent is answered with its key in x-par-session-id, each of a
    conversation's by the same process; to the others, without the header."""
    for _, agent, ask, _ in ROWS:
        if ask.key not in ("body", "header"):
            continue
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        key = str(uuid.uuid4())
        seen = set()
        for _ in range(4):
            method, path, body, headers = ask.request(key)
            c.request(method, f"/agents/{agent}{path}", body, headers)
            r = c.getresponse()
            r.read()
            got = r.getheader("x-par-session-id")
            if r.status != 200 or got != (key if agent == TRACKED else None):
                raise SystemExit(f"{agent} answered a request with its key in the {ask.key}: "
                                 f"{r.status}, x-par-session-id {got!r}")
            seen.add(r.getheader("x-par-process"))
        if agent == TRACKED and len(seen) != 1:
            raise SystemExit(f"one conversation of {agent} was served by {sorted(seen)}")
        c.close()


def ready_counts(port):
    """Ready processes per agent."""
    try:
        procs = processes(port)
    except (OSError, ValueError):
        return None
    counts = {}
    for p in procs:
        if p.get("state") == "ready":
            counts[p["agent_id"]] = counts.get(p["agent_id"], 0) + 1
    return counts


def processes(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/supervisor/processes")
    data = json.loads(c.getresponse().read())
    return data["processes"] if isinstance(data, dict) else data


def worker_port(sup_port):
    return next(p["port"] for p in processes(sup_port) if p["agent_id"] == AGENT)


def measure_nginx(tmp, upstream, n, conns, rounds, only=()):
    """nginx as bench/run configures it (one process here: callgrind follows no forks)."""
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        conf_text = NGINX_CONF.replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;")
        f.write(conf_text.format(dir=d, upstream=upstream, port=port, agent=AGENT))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cg = Callgrind([nginx, "-c", conf, "-p", d], d)
    out = {}
    try:
        if not wait_for(lambda: answers(port, f"/agents/{AGENT}/health"), 60, 0.2):
            raise SystemExit("nginx under valgrind did not answer")
        for name, agent, ask, _ in ROWS:
            if agent != AGENT or name not in NGINX_ROWS:
                continue
            out[f"nginx:{name}"] = per_request(cg, port, f"/agents/{AGENT}", ask, n, conns, rounds)
            log(f"nginx  {AGENT:12} {name:16} {out[f'nginx:{name}'][0]:>9.0f} instructions per request")
    finally:
        cg.stop()
    return out


if __name__ == "__main__":
    main()
