"""A bounded load through the load balancer: a few clients, each sending one
request at a time on a new connection, at most `rate` requests per second in
all. Every answer is kept with the ALB generation and target that served it,
so that a step can count its requests and failures by time and by target."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Answer:
    start: float
    end: float
    path: str
    status: int  # 0: no HTTP answer
    generation: int  # -1: unknown (no answer from nginx)
    target: str
    body: object
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Load:
    def __init__(self, url: str, calls: list[tuple[str, object]], clients: int = 4, rate: float = 40,
                 timeout: float = 30) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.calls = calls
        self.clients = clients
        self.pause = clients / rate
        self.timeout = timeout
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.clients):
            t = threading.Thread(target=self.client, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def client(self, i: int) -> None:
        n = i
        while not self.stopping.is_set():
            path, body = self.calls[n % len(self.calls)]
            n += 1
            a = self.send(path, body)
            with self.lock:
                self.answers.append(a)
            self.stopping.wait(max(0.0, self.pause - (a.end - a.start)))

    def send(self, path: str, body: object) -> Answer:
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            r = conn.getresponse()
            raw = r.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw[:200].decode(errors="replace")
            return Answer(t0, time.monotonic(), path, r.status, int(r.getheader("X-Alb-Generation", "-1")),
                          r.getheader("X-Alb-Target", ""), parsed)
        except OSError as e:
            return Answer(t0, time.monotonic(), path, 0, -1, "", None, f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    def between(self, since: float, until: float) -> list[Answer]:
        """Answers to the requests sent in [since, until)."""
        with self.lock:
            return [a for a in self.answers if since <= a.start < until]


def summary(answers: list[Answer], names: dict[str, str]) -> str:
    """`N requests, N ok, N failed (...)`, per target (names: '127.0.0.1:port' -> task name)."""
    failed = [a for a in answers if not a.ok]
    kinds = Counter(a.error.split(":")[0] if a.status == 0 else str(a.status) for a in failed)
    per = Counter(names.get(a.target, a.target or "none") for a in answers)
    text = f"{len(answers)} requests, {len(answers) - len(failed)} ok, {len(failed)} failed"
    if kinds:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) + ")"
    return text + "; by task: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
