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
]), max_size=12)


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
                                                                  + b"\r\n\r\nbody")))
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
