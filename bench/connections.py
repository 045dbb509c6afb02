"""Idle and half-open connections, and huge heads, against `mailbeacon serve`.

    python bench/connections.py [--idle 2000] [--big-heads 3]

Opens `--idle` connections that each send half a request head (`GET /v3/domains
HTTP/1.1` and a Host header, no blank line) and holds them, then times pixels and API
calls on new connections meanwhile, and sends `--big-heads` requests with a 100 MB header
value. Prints how many held sockets the server closed, the answer times, and the
server's resident memory before and after (default settings: 1,000 connections per
process, 10 s per head, 64 KiB per head).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path

from memory import rss_mb
from tracking import free_port, start_mailbeacon


def ask(port: int, head: bytes) -> tuple[int, float]:
    """Status and seconds of one request on a new connection."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1]), time.perf_counter() - start


def big_head(port: int, size: int) -> int:
    """Send a request whose header value has `size` bytes; the status answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /v3/domains HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 2**20
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server answered and stopped reading
        line = sock.makefile("rb").readline()
    return int(line.split()[1]) if line else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--big-heads", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mb-conn-"))
    port = free_port()
    proc, _ = start_mailbeacon(folder, port)
    held: list[socket.socket] = []
    pixel = b"GET /o/zzzz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    api = b"GET /v3/domains HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        for _ in range(20):  # warm up (imports, caches) before the first figure
            ask(port, pixel)
            ask(port, api)
        before = rss_mb(proc.pid)
        for _ in range(args.idle):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"GET /v3/domains HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        time.sleep(1.0)
        with_idle = rss_mb(proc.pid)
        times: dict[str, list[float]] = {"pixel": [], "api": []}
        for _ in range(200):
            for name, head in (("pixel", pixel), ("api", api)):
                status, seconds = ask(port, head)
                assert status in (200, 401), status
                times[name].append(seconds)
        closed = 0
        for sock in held:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        statuses = [big_head(port, 100 * 2**20) for _ in range(args.big_heads)]
        after = rss_mb(proc.pid)
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.idle} half-open connections held: {closed} closed by the server")
    for name, values in times.items():
        values.sort()
        print(f"{name}: median {values[len(values) // 2] * 1000:.1f} ms, "
              f"p99 {values[int(len(values) * 0.99)] * 1000:.1f} ms, "
              f"max {values[-1] * 1000:.1f} ms over {len(values)} new connections")
    print(f"{args.big_heads} heads with a 100 MB header value: answered {statuses}")
    print(f"RSS {before:.1f} MB warmed up, {with_idle:.1f} MB with the connections held, "
          f"{after:.1f} MB after the big heads")


if __name__ == "__main__":
    main()
