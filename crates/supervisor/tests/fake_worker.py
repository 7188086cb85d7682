#!/usr/bin/env python3
"""A fake `par worker` for supervisor tests: serves /health with its identity
and echoes every request; behaviour chosen by FAKE_* environment variables
(set through an agent's env_vars):

  FAKE_EXIT78=msg        print msg as an error line and exit 78 (package failure)
  FAKE_NEVER_READY=1     /health says "starting" forever
  FAKE_START_DELAY=s     /health says "starting" for s seconds
  FAKE_IGNORE_TERM=1     ignore SIGTERM
  FAKE_HEALTH_FAIL_AFTER=s   /health answers 500 after s seconds
  FAKE_CHILD=1           start a child process in the same group (like the agent host)
  FAKE_WRONG_ID=x        claim to be agent x
  FAKE_CRASH_AFTER=s     exit 3 after s seconds
  FAKE_ALLOC_MB=n        hold n MB of touched memory
  FAKE_ERROR_LINE=1      print an error line naming this run (its pid) at start

Routes: /health, /meta, /sse?n=&delay=, /sleep?s=, /crash, anything else echoes.
"""
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AGENT = os.environ.get("PAR_AGENT_ID", "?")
PORT = int(os.environ["PAR_PORT"])
START = time.monotonic()

if os.environ.get("FAKE_EXIT78"):
    print(json.dumps({"level": "ERROR", "fields": {"message": os.environ["FAKE_EXIT78"]}}), flush=True)
    sys.exit(78)
if os.environ.get("FAKE_ERROR_LINE"):
    print(f"ERROR run {os.getpid()} starting", file=sys.stderr, flush=True)
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
if os.environ.get("FAKE_CRASH_AFTER"):
    import threading
    threading.Timer(float(os.environ["FAKE_CRASH_AFTER"]), lambda: os._exit(3)).start()
if os.environ.get("FAKE_ALLOC_MB"):
    BALLAST = bytearray(int(os.environ["FAKE_ALLOC_MB"]) * 1024 * 1024)
    for i in range(0, len(BALLAST), 4096):
        BALLAST[i] = 1
if os.environ.get("FAKE_CHILD"):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, obj, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        if path == "/health":
            up = time.monotonic() - START
            ident = os.environ.get("FAKE_WRONG_ID", AGENT)
            if os.environ.get("FAKE_NEVER_READY") or up < float(os.environ.get("FAKE_START_DELAY", "0")):
                return self.send_json(503, {"status": "starting", "agent_id": ident})
            fail_after = os.environ.get("FAKE_HEALTH_FAIL_AFTER")
            if fail_after and up > float(fail_after):
                return self.send_json(500, {"status": "error", "agent_id": ident, "error": "fake failure"})
            return self.send_json(200, {"status": "ready", "agent_id": ident, "package_id": "fake@1.0.0"})
        if path == "/meta":
            return self.send_json(200, {"name": "fake", "version": "1.0.0", "description": "a fake agent",
                                        "capabilities": ["echo"]})
        if path == "/sse":
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            n, delay = int(q.get("n", "3")), float(q.get("delay", "0.2"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                chunk = (": " + "-" * 2048 + "\n\n" if i == 0 else "") + f"id: {i}\nevent: tick\ndata: {{\"i\": {i}}}\n\n"
                data = chunk.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(delay)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        if path == "/sleep":
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            time.sleep(float(q.get("s", "1")))
        if path == "/crash":
            os._exit(1)
        self.send_json(200, {
            "agent_id": AGENT, "pid": os.getpid(), "port": PORT, "method": self.command, "path": path,
            "query": query, "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }, extra=[("Allow", "GET, POST, HEAD, OPTIONS")] if self.command == "OPTIONS" else ())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = False
try:
    if os.environ.get("PAR_LISTEN_FD"):
        # As `par worker` does: serve on the socket the supervisor hands over.
        import socket
        server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=int(os.environ["PAR_LISTEN_FD"]))
        server.server_address = server.socket.getsockname()
    else:
        server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
except OSError as e:
    if e.errno == 98:
        # As `par worker` does: the port was taken meanwhile (EX_TEMPFAIL).
        print(json.dumps({"level": "ERROR", "fields": {"message": f"port {PORT} in use"}}), flush=True)
        sys.exit(75)
    raise
print(json.dumps({"level": "INFO", "fields": {"message": f"fake worker {AGENT} on {PORT}"}}), flush=True)
server.serve_forever()
