"""Raw MIME intake never fails with anything but a clear 400."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbeacon.errors import BadRequest
from mailbeacon.send.controls import controls_from_headers

HEADER_LINES = st.lists(st.sampled_from([
    b"From: Shop <shop@example.com>", b"To: a@example.org", b"Subject: hi",
    b"X-Mailgun-Tag: a,b", b"X-Mailgun-Variables: {\"a\": 1}", b"X-Mailgun-Track: yes",
    b"X-Mailgun-Track-Clicks: htmlonly", b"X-Mailgun-Deliver-By: Fri, 1 Jan 2027 10:00:00 -0000",
    b"Content-Type: multipart/alternative; boundary=b", b"MIME-Version: 1.0", b" folded",
    b"X-Mailgun-Variables: [1,", b"X-Mailgun-Track: perhaps", b"\xff\xfe: \x00",
    # The character classes behind the 500s of issue 19.
    b"Subject: =?utf-8?q?Hi=0D=0AReply-To:_a@evil.test?=", b"Subject: a\x0cb",
    b"Subject: a\x0bb", "Subject: a\u2028b".encode(), b"Subject: a\x85b",
    b"Subject: =?utf-8?b?SGkNClgtSW5qZWN0ZWQ6IDE=?=", b"Subject: =?x-nope?q?a?=",
    b'From: "=?utf-8?q?E=0D=0AX:_y?=" <shop@example.com>',
    "To: Jöhn <用户@例子.广告>".encode(), b"Content-Type: text/plain; charset=x-nope",
    b'Content-Disposition: attachment; filename="a\x0bb"',
    b"Content-Disposition: attachment; filename*=utf-8''a%0D%0AX%3A%201",
    b"DKIM-Signature: v=1; b=forged", b"ARC-Seal: i=1", b"Return-Path: <x@evil.test>",
    b"X-Mailgun-Recipient-Variables: {\"alice@example.org\": {\"n\": \"=?utf-8?q?=0D?=\"}}",
]), max_size=12)


def nested(depth: int) -> bytes:
    """MIME nested `depth` multiparts deep (the email package fails near 250)."""
    head = b"From: shop@example.com\r\nSubject: deep\r\n"
    opens = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
                     % (i, i) for i in range(depth))
    closes = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opens + b"Content-Type: text/plain\r\n\r\nx" + closes


@given(HEADER_LINES, st.binary(max_size=300), st.sampled_from([b"\r\n", b"\n"]))
def test_control_headers_parse_or_refuse_clearly(lines: list[bytes], body: bytes,
                                                  eol: bytes) -> None:
    raw = eol.join(lines) + eol + eol + body
    try:
        controls = controls_from_headers(raw)
    except BadRequest as exc:
        assert exc.message
        return
    assert controls.stripped.endswith(body)
    assert b"X-Mailgun-Tag" not in controls.stripped.split(eol + eol)[0]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(st.binary(max_size=2000), HEADER_LINES.map(lambda ls: b"\r\n".join(ls)
                                                                  + b"\r\n\r\nbody"),
                     st.integers(0, 400).map(nested)))
def test_messages_mime_never_500(service_factory: object, data: bytes) -> None:
    import asyncio

    async def run() -> None:
        async with service_factory() as svc:  # type: ignore[operator]
            await svc.client.post("/v3/domains", data={"name": "example.com"})  # once
            r = await svc.client.post("/v3/example.com/messages.mime",
                                      data={"to": "alice@example.org"},
                                      files={"message": ("m.eml", data, "message/rfc822")})
            assert r.status_code in (200, 400), r.text
            assert "message" in r.json()

    asyncio.run(run())
