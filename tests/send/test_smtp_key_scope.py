"""SMTP submission obeys the key's scope, like the HTTP API: a real smtplib client."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from mailbeacon.domains.apikeys import KeyChecker, Role, create_key, list_keys
from tests.support import Service, SmtpRelay


def _message(sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.org"
    msg["Subject"] = "Hello"
    msg.set_content("Hello")
    return msg


def _submit(port: int, key: str, senders: list[str]) -> list[tuple[str, int, str]]:
    """One session, one message per sender: (sender, code, text) of each answer."""
    answers = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("api", key)
        for sender in senders:
            try:
                client.send_message(_message(sender), from_addr=sender,
                                    to_addrs=["alice@example.org"])
                answers.append((sender, 250, ""))
            except smtplib.SMTPDataError as exc:
                answers.append((sender, exc.smtp_code, exc.smtp_error.decode()))
                client.rset()
    return answers


async def test_a_domain_key_submits_only_for_its_domain(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    service, port = smtp_service
    key = create_key(service.runtime.db, "shop", domain="example.com", role=Role.SEND)
    answers = await asyncio.to_thread(
        _submit, port, key, ["shop@example.com", "news@other.example", "shop@EXAMPLE.COM"])
    assert answers[0] == ("shop@example.com", 250, "")
    sender, code, text = answers[1]
    assert code == 550 and text.startswith("5.7.1") and "example.com" in text
    assert answers[2][1] == 250
    await smtp_relay.wait_for(2)
    assert len(await service.events("other.example", event="accepted")) == 0


async def test_a_key_revoked_mid_session_stops_sending(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    service, port = smtp_service
    key = create_key(service.runtime.db, "app")

    def session() -> list[tuple[str, int, str]]:
        answers = []
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("api", key)
            client.send_message(_message("a@other.example"), to_addrs=["x@example.org"])
            answers.append(("a", 250, ""))
            # Revoked by another process: this one notices once its cache expires.
            KeyChecker(service.runtime.db).revoke(list_keys(service.runtime.db)[0].id)
            service.runtime.keys.clock = lambda: 1e12
            try:
                client.send_message(_message("b@other.example"), to_addrs=["x@example.org"])
                answers.append(("b", 250, ""))
            except smtplib.SMTPDataError as exc:
                answers.append(("b", exc.smtp_code, exc.smtp_error.decode()))
        return answers

    answers = await asyncio.to_thread(session)
    assert answers[0][1] == 250
    assert answers[1][1] == 550 and "no longer valid" in answers[1][2]
