"""The whole path over real sockets: `mailbeacon serve` as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import API_KEY, SmtpRelay, free_port


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


opener = urllib.request.build_opener(NoRedirect)


def call(base: str, method: str, path: str, fields: list[tuple[str, str]] | None = None,
         auth: bool = True) -> tuple[int, Any]:
    body = None
    headers = {}
    if fields is not None:
        from urllib.parse import urlencode

        body = urlencode(fields).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    if auth:
        import base64

        headers["authorization"] = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    req = urllib.request.Request(base + path, data=body, headers=headers, method=method)
    try:
        with opener.open(req, timeout=10) as r:
            data = r.read()
            return r.status, json.loads(data) if r.headers["content-type"] == "application/json" \
                else (dict(r.headers), data)
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, json.loads(data) if e.headers["content-type"] == "application/json" \
            else (dict(e.headers), data)


@pytest.fixture
def served(tmp_path: Path, smtp_relay: SmtpRelay,
           database_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "MAILBEACON_API_KEY": API_KEY,
           "MAILBEACON_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailbeacon", "serve", "--http", f"127.0.0.1:{port}",
         "--relay", smtp_relay.url], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                status, _ = call(base, "GET", "/v3/domains")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("mailbeacon serve did not start")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output, output
        assert API_KEY not in output  # secrets never reach logs


def test_send_track_and_read_events(served: tuple[str, Any], smtp_relay: SmtpRelay) -> None:
    base, _ = served
    assert call(base, "GET", "/v3/domains", auth=False)[0] == 401
    assert call(base, "POST", "/v3/domains", [("name", "example.com")])[0] == 200
    status, answer = call(base, "POST", "/v3/example.com/messages", [
        ("from", "Shop <shop@example.com>"), ("to", "alice@example.org"),
        ("subject", "Sale"), ("text", "Visit https://shop.example.net/sale"),
        ("html", '<p><a href="https://shop.example.net/sale?a=1&amp;b=2">Sale</a></p>'),
        ("o:tag", "sale")])
    assert status == 200 and answer["message"] == "Queued. Thank you."
    deadline = time.time() + 10
    while not smtp_relay.received and time.time() < deadline:
        time.sleep(0.05)
    html = smtp_relay.received[0].part("text/html")
    (link,) = re.findall(r'href="([^"]+/c/[a-z0-9]+)">', html)
    (pixel,) = re.findall(r'src="([^"]+/o/[a-z0-9]+)"', html)
    assert link.startswith(base) and pixel.startswith(base)

    status, (headers, body) = call(base, "GET", pixel[len(base):], auth=False)
    assert status == 200 and headers["content-type"] == "image/gif" and body[:6] == b"GIF89a"
    status, (headers, _) = call(base, "GET", link[len(base):], auth=False)
    assert status == 302 and headers["location"] == "https://shop.example.net/sale?a=1&b=2"

    status, page = call(base, "GET", "/v3/example.com/events?ascending=yes&limit=2&begin=0")
    seen = []
    while page["items"]:
        seen += [e["event"] for e in page["items"]]
        status, page = call(base, "GET", page["paging"]["next"][len(base):])
    assert seen == ["accepted", "delivered", "opened", "clicked"]


def test_generated_secret_survives_restart(tmp_path: Path, smtp_relay: SmtpRelay,
                                           database_url: str) -> None:
    """Links sent before a restart still verify after it."""
    from mailbeacon.model.ids import new_id
    from mailbeacon.model.tokens import Kind, Token
    from mailbeacon.storage.db import Database
    from mailbeacon.storage.migrate import migrate
    from mailbeacon.track.keyring import token_codec

    db = Database(database_url)
    migrate(db)
    token = token_codec(db).encode(
        Token(Kind.OPEN, new_id()))
    db.dispose()
    db = Database(database_url)
    assert token_codec(db).decode(token).kind is Kind.OPEN
    # Configuring a key later keeps the generated one as a verifying key.
    configured = token_codec(db, secret_key="a-configured-secret-key")
    assert configured.decode(token).kind is Kind.OPEN
    db.dispose()
