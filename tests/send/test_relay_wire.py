"""A DATA payload made beforehand (off the event loop) reaches the relay exactly as
aiosmtplib's own `data` would have sent the message."""

from __future__ import annotations

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailbeacon.send.relay import Relay, transparent
from mailbeacon.send.transport import Parcel
from tests.support import SmtpRelay

MESSAGES = [
    b"Subject: x\r\n\r\nhello\r\n",
    b"Subject: x\n\n.leading dot\n..two\r\nlone\rcr\r\n.\r\nend",
    b"Subject: x\r\n\r\n" + b".\r\n" * 3 + b"no final line end",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_transparent_matches_aiosmtplib(message: bytes) -> None:
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
    assert transparent(message) == expected


async def test_relay_receives_the_same_bytes_either_way(smtp_relay: SmtpRelay) -> None:
    relay = Relay.from_url(smtp_relay.url)
    for message in MESSAGES:
        plain = await relay.send(Parcel("d1", "a@example.com", "b@example.org", message))
        wired = await relay.send(Parcel("d2", "a@example.com", "b@example.org", message,
                                        transparent(message)))
        assert plain.delivered and wired.delivered
    received = [r.data for r in smtp_relay.received]
    assert received[0::2] == received[1::2]


async def test_data_refused_after_a_prepared_payload(smtp_relay: SmtpRelay) -> None:
    async def refuse(server: object, session: object, envelope: object) -> str:
        return "552 5.3.4 Message too big"

    smtp_relay.handle_DATA = refuse  # type: ignore[method-assign]
    outcome = await Relay.from_url(smtp_relay.url).send(Parcel(
        "d1", "a@example.com", "b@example.org", MESSAGES[0], transparent(MESSAGES[0])))
    assert (outcome.code, outcome.permanent) == (552, True)
