"""Tracking latency while a large message is composed: does the front keep answering?

    python bench/compose_liveness.py [--seconds 20] [--size 5000000] [--recipients 1000]

Starts `mailbeacon serve` (SQLite in a temp folder) relaying to an aiosmtpd server in
this process, takes a real open pixel and tracked link from a small message, and times
`/o/`, `/c/` and `GET /v3/domains` one request after another: first idle (the
baseline, in the same run), then for `--seconds` while a message with a `--size` HTML
body to `--recipients` recipients is being composed and relayed. Prints the median, p99
and worst latency of each, and the worst during the send as a ratio of the idle median
and of the idle worst.

Then, without a server, the same composition in a thread and in a process beside an
event loop, and how late the loop's 5 ms timer fires meanwhile (why composition runs in a
process: a thread holds the GIL in long stretches).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import KEY, free_port, wait_port  # noqa: E402

AUTH = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()


def newsletter(size: int) -> str:
    """Paragraphs with a link every ~2 KB, like tests/send/test_compose_liveness.py."""
    block = ('<tr><td><p>Product: a good thing &amp; more, described at length. '
             + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
             + '<a href="https://shop.example.com/p?id=1&amp;utm_source=news">see</a>'
             "</p></td></tr>\n")
    return f"<html><body><table>{block * (size // len(block) + 1)}</table></body></html>"


class Relay:
    def __init__(self) -> None:
        self.count = 0
        self.first = b""
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.count += 1
            if not self.first:
                self.first = bytes(envelope.content)  # type: ignore[attr-defined]
        return "250 OK"


def post(port: int, path: str, fields: list[tuple[str, str]], timeout: float = 300) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=urlencode(fields).encode(),
                                 headers={"authorization": AUTH})
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        answer.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def timed(port: int, path: str, auth: bool = False) -> float:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"authorization": AUTH} if auth else {})
    started = time.perf_counter()
    try:
        with OPENER.open(req, timeout=60) as answer:
            answer.read()
    except urllib.error.HTTPError as answer:  # the 302 of a click
        answer.read()
    return time.perf_counter() - started


def sample(port: int, paths: dict[str, str], until: float) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in paths}
    while time.perf_counter() < until:
        for name, path in paths.items():
            found[name].append(timed(port, path, auth=name == "api"))
        time.sleep(0.02)
    return found


def loop_lag(size: int) -> dict[str, float]:
    """Worst lateness of a 5 ms asyncio timer while one message is composed for three
    recipients in a thread, and in a process."""
    from mailbeacon.domains.domain import Domain
    from mailbeacon.model.ids import new_id
    from mailbeacon.model.tokens import TokenCodec
    from mailbeacon.send.compose import Tracking

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "x"
    msg.set_content("hello")
    msg.add_alternative(newsletter(size), subtype="html")
    mime = msg.as_bytes()
    args = (mime, Domain("example.com", new_id(), 0, True, "yes", False, None),
            Tracking(True, "yes", False, "http://t.example.com"),
            TokenCodec([b"bench-key-0123456789abcdef"]))
    worst = {}
    for name, executor in (("thread", concurrent.futures.ThreadPoolExecutor(1)),
                           ("process", concurrent.futures.ProcessPoolExecutor(1))):
        executor.submit(int).result()  # started before timing

        async def run(executor: concurrent.futures.Executor) -> float:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(executor, compose_three, *args)
            late = 0.0
            while not job.done():
                started = time.perf_counter()
                await asyncio.sleep(0.005)
                late = max(late, time.perf_counter() - started - 0.005)
            await job
            return late

        worst[name] = asyncio.run(run(executor))
        executor.shutdown()
    return worst


def compose_three(mime: bytes, domain: object, tracking: object, codec: object) -> None:
    from mailbeacon.model.ids import new_id
    from mailbeacon.send.compose import Composer

    composer = Composer(mime, domain, tracking, codec)  # type: ignore[arg-type]
    for _ in range(3):
        composer.render(new_id(), "b@example.org")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--size", type=int, default=5_000_000)
    parser.add_argument("--recipients", type=int, default=1000)
    args = parser.parse_args()
    relay = Relay()
    relay_port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=relay_port)
    controller.start()
    folder = Path(tempfile.mkdtemp(prefix="mb-liveness-"))
    port = free_port()
    env = {**os.environ, "MAILBEACON_API_KEY": KEY, "MAILBEACON_LOG_LEVEL": "warning",
           "MAILBEACON_DATABASE_URL": f"sqlite:///{folder / 'send.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "mailbeacon", "serve", "--http",
                             f"127.0.0.1:{port}", "--relay",
                             f"smtp+plain://127.0.0.1:{relay_port}"], env=env, cwd=folder,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    try:
        post(port, "/v3/domains", [("name", "example.com")])
        post(port, "/v3/example.com/messages", [
            ("from", "shop@example.com"), ("to", "probe@example.org"), ("subject", "probe"),
            ("html", '<p><a href="https://shop.example.com/x">shop</a></p>')])
        while not relay.first:
            time.sleep(0.05)
        text = relay.first.decode("ascii", "replace").replace("=\r\n", "").replace("=3D", "=")
        paths = {"open /o/": re.search(r"/o/[a-z0-9]+", text).group(),  # type: ignore[union-attr]
                 "click /c/": re.search(r"/c/[a-z0-9]+", text).group(),  # type: ignore[union-attr]
                 "api": "/v3/domains"}
        idle = sample(port, paths, time.perf_counter() + args.seconds / 2)
        fields = [("from", "shop@example.com"), ("subject", "Big"), ("text", "Hello"),
                  ("html", newsletter(args.size)),
                  *[("to", f"user{i}@example.org") for i in range(args.recipients)]]
        started = time.perf_counter()
        post(port, "/v3/example.com/messages", fields)
        intake = time.perf_counter() - started
        while relay.count < 2:  # the first big one is out: composing goes on
            time.sleep(0.05)
        before = relay.count
        busy = sample(port, paths, time.perf_counter() + args.seconds)
        sent = relay.count - before
    finally:
        proc.terminate()
        proc.wait(30)
        controller.stop()
    lag = loop_lag(args.size)
    print(f"message: {args.size / 1e6:.1f} MB HTML to {args.recipients} recipients; "
          f"intake {intake:.1f} s; {sent} relayed during the {args.seconds:.0f} s measured")
    print(f"{'endpoint':12} {'idle p50':>9} {'idle max':>9} {'send p50':>9} {'send p99':>9} "
          f"{'send max':>9} {'max/idle p50':>13} {'max/idle max':>13}")
    for name in paths:
        a, b = idle[name], sorted(busy[name])
        p99 = b[min(len(b) - 1, int(len(b) * 0.99))]
        print(f"{name:12} {statistics.median(a) * 1000:7.1f}ms {max(a) * 1000:7.1f}ms "
              f"{statistics.median(b) * 1000:7.1f}ms {p99 * 1000:7.1f}ms "
              f"{max(b) * 1000:7.1f}ms {max(b) / statistics.median(a):12.1f}x "
              f"{max(b) / max(a):12.1f}x")
    print("event-loop timer lateness while composing 3 copies beside the loop: "
          + ", ".join(f"in a {k} {v * 1000:.0f} ms" for k, v in lag.items()))


if __name__ == "__main__":
    main()
