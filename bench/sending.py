"""Sending throughput: HTTP API -> worker -> a loopback SMTP relay, and batch intake.

    python bench/sending.py [--messages 10000] [--batch 1000] [--database-url URL]

Starts `mailbeacon serve` (SQLite in a temp folder, or the empty database at
`--database-url`, e.g. a fresh PostgreSQL schema) relaying to an aiosmtpd server in
this process, posts `--messages` single-recipient messages through the API (8 client
threads), and reports API intake/s and end-to-end delivered/s (until the relay has them
all). Then posts one batch of `--batch` recipients with recipient-variables and reports
the intake latency. The baseline in the same run: the relay alone, fed by aiosmtplib
directly (how fast this machine moves SMTP transactions at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import KEY, api, free_port, wait_port  # noqa: E402


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


def relay_baseline(port: int, n: int) -> float:
    message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhello\r\n"

    async def run() -> None:
        limit = asyncio.Semaphore(10)

        async def one() -> None:
            async with limit:
                await aiosmtplib.send(message, sender="a@example.com",
                                      recipients=["b@example.org"], hostname="127.0.0.1",
                                      port=port, start_tls=False)

        await asyncio.gather(*(one() for _ in range(n)))

    start = time.perf_counter()
    asyncio.run(run())
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--database-url", default="",
                        help="an empty database (default: SQLite in a temp folder)")
    args = parser.parse_args()
    counter = Counter()
    relay_port = free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=relay_port)
    controller.start()
    baseline = relay_baseline(relay_port, min(2000, args.messages))
    counter.count = 0
    folder = Path(tempfile.mkdtemp(prefix="mb-send-"))
    port = free_port()
    env = {**os.environ, "MAILBEACON_API_KEY": KEY, "MAILBEACON_LOG_LEVEL": "warning",
           "MAILBEACON_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'send.db'}"}
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "mailbeacon", "serve", "--http",
                             f"127.0.0.1:{port}", "--relay",
                             f"smtp+plain://127.0.0.1:{relay_port}"], env=env, cwd=folder,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    try:
        api(port, "/v3/domains", [("name", "example.com")])
        html = '<p>Hello <a href="https://shop.example.com/x">shop</a></p>'

        def post(i: int) -> None:
            api(port, "/v3/example.com/messages", [
                ("from", "shop@example.com"), ("to", f"user{i}@example.org"),
                ("subject", f"Message {i}"), ("html", html), ("text", "Hello")])

        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(args.messages)))
        intake = args.messages / (time.perf_counter() - start)
        while counter.count < args.messages:
            time.sleep(0.05)
        end_to_end = args.messages / (time.perf_counter() - start)
        people = {f"batch{i}@example.org": {"name": f"N{i}"} for i in range(args.batch)}
        started = time.perf_counter()
        api(port, "/v3/example.com/messages", [
            ("from", "shop@example.com"), *[("to", a) for a in people],
            ("subject", "Hi %recipient.name%"), ("html", html),
            ("recipient-variables", json.dumps(people))])
        batch_ms = (time.perf_counter() - started) * 1000
    finally:
        proc.terminate()
        proc.wait(10)
        controller.stop()
    print(f"relay alone (aiosmtplib, 10 parallel):      {baseline:8.0f} msg/s (baseline)")
    print(f"API intake (8 clients):                     {intake:8.0f} msg/s")
    print(f"API -> worker -> relay, end to end:         {end_to_end:8.0f} msg/s "
          f"({end_to_end / baseline:.2f}x baseline)")
    print(f"intake of one {args.batch}-recipient batch:      {batch_ms:8.0f} ms")


if __name__ == "__main__":
    main()
