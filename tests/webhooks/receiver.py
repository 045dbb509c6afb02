"""A webhook receiver on a real loopback socket that checks signatures as Mailgun's
documentation says: hex HMAC-SHA256(key, timestamp + token) == signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, key: Callable[[], str]) -> None:
        self.key = key  # the signing key to verify with (read at each request)
        self.status = 200
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []  # verified payloads
        self.forged = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.delay:
                    time.sleep(receiver.delay)
                payload = json.loads(body)
                sig = payload["signature"]
                expected = hmac.new(receiver.key().encode(),
                                    (sig["timestamp"] + sig["token"]).encode(),
                                    hashlib.sha256).hexdigest()
                with receiver.lock:
                    if hmac.compare_digest(expected, sig["signature"]) and \
                            self.headers["content-type"] == "application/json" and \
                            len(sig["token"]) == 50:
                        receiver.received.append(payload)
                    else:
                        receiver.forged += 1
                try:
                    self.send_response(receiver.status)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the sender posts up to 20 at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p["event-data"] for p in self.received]
