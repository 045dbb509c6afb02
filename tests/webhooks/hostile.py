"""Webhook endpoints that misbehave, on real loopback sockets: one that trickles its answer
a byte at a time, one that sends an endless body. Each counts what it did."""

from __future__ import annotations

import socket
import threading


class HostileEndpoint:
    """`mode` "trickle": answers 200 with Content-Length 1000, then one byte every
    `interval` seconds. "huge": answers 200 with a 100 MB body, written as fast as the
    client reads it; `sent` counts the bytes the client took."""

    def __init__(self, mode: str, interval: float = 0.5) -> None:
        self.mode = mode
        self.interval = interval
        self.requests = 0  # requests whose head and body arrived
        self.open = 0  # connections being served now
        self.sent = 0  # answer bytes written
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def start(self) -> HostileEndpoint:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
        try:
            with conn:
                conn.settimeout(10)
                if not self._read_request(conn):
                    return
                if self.mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    for _ in range(1000):
                        if self.stopping.wait(self.interval):
                            return
                        conn.sendall(b"x")
                        self._count(1)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: 100000000\r\n\r\n")
                    chunk = b"y" * 65536
                    for _ in range(100_000_000 // len(chunk)):
                        if self.stopping.is_set():
                            return
                        conn.sendall(chunk)
                        self._count(len(chunk))
        except OSError:
            pass  # the client hung up: what the sender should do
        finally:
            with self.lock:
                self.open -= 1

    def _count(self, n: int) -> None:
        with self.lock:
            self.sent += n

    def _read_request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return False
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            more = conn.recv(65536)
            if not more:
                return False
            body += more
        with self.lock:
            self.requests += 1
        return True


