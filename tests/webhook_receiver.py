"""A webhook endpoint on loopback for the tests: a threaded HTTP server with
one :class:`Hook` per path, which verifies every request's signature with the
``standardwebhooks`` library (docs/webhooks.md) and can be told to fail."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["Hook", "Receiver"]


@dataclass
class Hook:
    """One endpoint of the receiver: its secret and what it was sent."""

    secret: str = ""
    #: (webhook-id, parsed CloudEvent) of every request answered 2xx
    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: webhook-id of every request received, answered or not
    received: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    #: requests answered 503 (while down)
    refused: int = 0
    #: answer 503 until this time (monotonic)
    down_until: float = 0.0
    #: hold the answer to this webhook-id for ``hang_s`` (once)
    hang_id: str | None = None
    hang_s: float = 0.0
    #: every answer takes this long
    delay_s: float = 0.0


class Receiver:
    """A threaded HTTP server on loopback with one :class:`Hook` per path."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                hook = receiver.hooks[self.path]
                headers = {k.lower(): v for k, v in self.headers.items()}
                msg_id = headers["webhook-id"]
                with receiver.lock:
                    hook.received.append(msg_id)
                    try:
                        Webhook(hook.secret).verify(body, headers)
                    except WebhookVerificationError:
                        hook.bad_signatures += 1
                    hang = hook.hang_id == msg_id
                    if hang:
                        hook.hang_id = None
                if hang:
                    # The sender is killed meanwhile: never an answer it read.
                    time.sleep(hook.hang_s)
                    self.send_response(503)
                    self.end_headers()
                    return
                if hook.delay_s:
                    time.sleep(hook.delay_s)
                if time.monotonic() < hook.down_until:
                    with receiver.lock:
                        hook.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    hook.delivered.append((msg_id, orjson.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
