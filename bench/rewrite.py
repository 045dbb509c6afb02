"""HTML rewriting speed: a realistic 50 KB newsletter with 60 links, on one core.

    python bench/rewrite.py [--seconds 3] [--pathological-mb 10]

Prints plans/s (analysing a document once per message), renders/s (one recipient's
copy: 60 signed click tokens and a pixel, signed as Composer.render does; then with each
token made by codec.encode, and with no signing at all, to show what signing costs)
and, as the baseline measured in the same run, how fast Python's own html.parser merely
reads the same document. Then the time to plan
documents of `--pathological-mb` MB built to defeat a scanner (a run of "<", unclosed
tags and comments, long attribute runs), against the newsletter's rate per MB: the scan
is linear, so these stay within a small factor of it (html.parser took 57 s on 10 MB of
"<", and minutes on "<a<a<a...").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from html.parser import HTMLParser

from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import Kind, Token, TokenCodec
from mailbeacon.send.rewrite import Link, plan_html


def newsletter(links: int = 60, size: int = 50_000) -> str:
    head = ("<!doctype html><html><head><meta charset='utf-8'><style>"
            + "td{font-family:Arial;color:#333} " * 40 + "</style></head><body><table>")
    rows = []
    for i in range(links):
        rows.append(f'<tr><td class="c{i}"><p>Product {i}: a good thing &amp; more. '
                    f'<a href="https://shop.example.com/p/{i}?utm_source=news&amp;utm_medium='
                    f'email&amp;utm_campaign=autumn">See product {i}</a></p>'
                    '<img src="https://cdn.example.com/img/%d.png" alt="" width="600"></td></tr>'
                    % i)
    body = "".join(rows)
    filler = "<tr><td>" + "Lorem ipsum dolor sit amet, consectetur adipiscing. " * 20 + "</td></tr>"
    while len(head) + len(body) < size:
        body += filler
    return head + body + "</table></body></html>"


def rate(func: object, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        func()  # type: ignore[operator]
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pathological-mb", type=float, default=10.0)
    args = parser.parse_args()
    html = newsletter()
    codec = TokenCodec([b"bench-secret-key-0123456789"])
    plan = plan_html(html)
    delivery = new_id()

    def render() -> str:
        # As Composer.render does: one signer per delivery (recipient), a token per link.
        tokens = codec.for_delivery(delivery)

        def click(link: Link) -> str:
            return f"https://t.example.com/c/{tokens.click(link.index, link.url)}"

        return plan.render(click, f"https://t.example.com/o/{tokens.open()}")

    def render_tokens() -> str:
        # Each token made from a Token value (codec.encode), as before for_delivery.
        def click(link: Link) -> str:
            token = Token(Kind.CLICK, delivery, link.index, link.url)
            return f"https://t.example.com/c/{codec.encode(token)}"

        pixel = f"https://t.example.com/o/{codec.encode(Token(Kind.OPEN, delivery))}"
        return plan.render(click, pixel)

    def render_plain() -> str:  # the same document with no tokens: the join alone
        return plan.render(lambda link: link.url, "https://t.example.com/o/x")

    def parse_only() -> None:
        reader = HTMLParser()
        reader.feed(html)
        reader.close()

    baseline = rate(parse_only, args.seconds)
    plans = rate(lambda: plan_html(html), args.seconds)
    renders = rate(render, args.seconds)
    encodes = rate(render_tokens, args.seconds)
    plain = rate(render_plain, args.seconds)
    print(f"document: {len(html) / 1000:.0f} KB, {len(plan.links)} tracked links")
    print(f"html.parser read only (baseline): {baseline:8.0f} /s")
    print(f"plan (once per message):          {plans:8.0f} /s  ({plans / baseline:.2f}x baseline)")
    print(f"render (once per recipient):      {renders:8.0f} /s  "
          f"({renders / baseline:.1f}x baseline)")
    print(f"  the same, tokens by codec.encode: {encodes:8.0f} /s  "
          f"({encodes / baseline:.1f}x baseline)")
    print(f"  the same without signing:         {plain:8.0f} /s  "
          f"({plain / baseline:.1f}x baseline)")
    size = int(args.pathological_mb * 1_000_000)
    per_mb = 1_000_000 / len(html) / plans  # seconds to plan 1 MB of newsletter
    print(f"pathological documents of {size / 1e6:g} MB "
          f"(newsletter: {per_mb * 1000:.0f} ms per MB):")
    for name, make in PATHOLOGICAL.items():
        doc = make(size)
        started = time.perf_counter()
        plan_html(doc)
        took = time.perf_counter() - started
        print(f"  {name:22} {took:7.2f} s  ({took / (len(doc) / 1e6) / per_mb:.2f}x "
              "the newsletter's time per MB)")


PATHOLOGICAL: dict[str, Callable[[int], str]] = {
    '"<" repeated': lambda n: "<" * n,
    '"<a" repeated': lambda n: "<a" * (n // 2),
    '"</" repeated': lambda n: "</" * (n // 2),
    "conditional comments": lambda n: "<!--[if mso]>" * (n // 13),
    "unclosed comments": lambda n: "<!--x" * (n // 5),
    "one unclosed tag": lambda n: "<a " + "x" * n,
    "attribute run": lambda n: "<a " + 'b="c" ' * (n // 6) + ">",
    "links": lambda n: '<a href="https://x.org/">x</a>' * (n // 30),
}


if __name__ == "__main__":
    main()
