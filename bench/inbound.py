"""Returned mail: parsing a hostile 5 MB "bounce", whole (before) and trimmed (now).

    python bench/inbound.py [--runs 1]

Three shapes of about 5.4 MB each: one base64 HTML part of "<" (the text scans chew on
it), a base64 text part full of addresses and SMTP codes, and tens of thousands of tiny
MIME parts (the email package's worst case). For each, the median time of `parse`
(mailbeacon.inbound.parser) with `message.trim_parts` switched off, as before issue 19.5,
and on, as now, and the ratio. Single process, one core.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable

from mailbeacon.inbound import message
from mailbeacon.inbound.parser import parse

SIZE = 5_400_000
HEAD = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: postmaster@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n")


def base64_part(body: bytes, ctype: bytes) -> bytes:
    encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return (HEAD + b"Content-Type: " + ctype + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + encoded)


def shapes() -> dict[str, bytes]:
    part = b"--P\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    line = b"Delivery to a@b.example failed: 550 5.1.1 user unknown\n"
    return {
        "html of '<'": base64_part(b"<" * (SIZE * 3 // 4), b"text/html"),
        "text of bounce lines": base64_part(line * (SIZE * 3 // 4 // len(line)), b"text/plain"),
        "tiny MIME parts": HEAD + b'Content-Type: multipart/mixed; boundary="P"\r\n\r\n'
                           + part * (SIZE // len(part)) + b"--P--\r\n",
    }


def median_seconds(func: Callable[[bytes], object], raw: bytes, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func(raw)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    trim = message.trim_parts
    print(f"{'shape':24} {'MB':>5} {'whole s':>9} {'trimmed s':>10} {'ratio':>7}")
    for name, raw in shapes().items():
        message.trim_parts = lambda data, *a, **k: data  # type: ignore[assignment]
        whole = median_seconds(parse, raw, args.runs)
        message.trim_parts = trim
        trimmed = median_seconds(parse, raw, args.runs)
        print(f"{name:24} {len(raw) / 1e6:5.1f} {whole:9.3f} {trimmed:10.3f} "
              f"{whole / trimmed:6.0f}x")


if __name__ == "__main__":
    main()
