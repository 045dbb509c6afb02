"""SMTP submission with a plain smtplib client over a real socket."""

from __future__ import annotations

import asyncio
import datetime
import re
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support import API_KEY, Service, SmtpRelay, free_port


@pytest.fixture
async def smtp_service(service_factory: Callable[..., Any],
                      smtp_relay: SmtpRelay) -> AsyncIterator[tuple[Service, int]]:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}",
                               smtp_max_bytes=200_000) as svc:
        await svc.add_domain("example.com")
        yield svc, port


def _message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "alice@example.org"
    msg["Subject"] = "Hello from SMTP"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Visit https://shop.example.net/text now")
    msg.add_alternative('<p><a href="https://shop.example.net/html">shop</a></p>',
                        subtype="html")
    return msg


def _send(port: int, msg: EmailMessage, to: list[str], login: tuple[str, str] | None,
          sender: str = "shop@example.com", method: str | None = None) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        if login:
            if method:
                client.user, client.password = login
                client.auth(method, getattr(client, f"auth_{method.lower()}"))
            else:
                client.login(*login)
        return client.send_message(msg, from_addr=sender, to_addrs=to)


@pytest.mark.parametrize("method", [None, "PLAIN", "LOGIN"])
async def test_submission_is_like_an_http_send(smtp_service: tuple[Service, int],
                                               smtp_relay: SmtpRelay,
                                               method: str | None) -> None:
    service, port = smtp_service
    msg = _message(X_Mailgun_Tag="Newsletter", X_Mailgun_Variables='{"user": 7}',
                   X_Mailgun_Track_Clicks="htmlonly", X_Campaign="kept")
    await asyncio.to_thread(_send, port, msg, ["alice@example.org", "bob@example.org"],
                            ("api", API_KEY), "shop@example.com", method)
    received = await smtp_relay.wait_for(2)
    relayed = received[0].message
    assert "X-Mailgun-Tag" not in relayed and "X-Mailgun-Variables" not in relayed
    assert "X-Mailgun-Track-Clicks" not in relayed
    assert relayed["X-Campaign"] == "kept"
    assert received[0].sender.startswith("bounce+")
    html, text = received[0].part("text/html"), received[0].part("text/plain")
    assert re.search(r'href="http://[^"]+/c/[a-z0-9]+"', html)
    assert "https://shop.example.net/text" in text  # htmlonly left the text alone
    events = await service.wait_events(2, event="delivered")
    assert {e["recipient"] for e in events} == {"alice@example.org", "bob@example.org"}
    assert all(e["tags"] == ["newsletter"] and e["user-variables"] == {"user": 7}
               for e in events)
    accepted = await service.events(event="accepted")
    assert accepted[0]["method"] == "smtp"


async def test_refusals(smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    _, port = smtp_service
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(_send, port, _message(), ["a@example.org"], ("api", "wrong"))
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(_send, port, _message(), ["a@example.org"], ("root", API_KEY))
    # Without AUTH only the bounce domains take mail: no open relay.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(_send, port, _message(), ["a@example.org"], None)
    assert refused.value.recipients["a@example.org"][0] == 550
    with pytest.raises(smtplib.SMTPDataError) as unknown:
        await asyncio.to_thread(_send, port, _message(), ["a@example.org"], ("api", API_KEY),
                                "someone@elsewhere.example")
    assert unknown.value.smtp_code == 550 and b"not a mailbeacon domain" in unknown.value.smtp_error
    big = _message()
    big.add_attachment(b"\0" * 300_000, maintype="application", subtype="octet-stream",
                       filename="big.bin")
    with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPSenderRefused)) as too_big:
        await asyncio.to_thread(_send, port, big, ["a@example.org"], ("api", API_KEY))
    assert too_big.value.smtp_code == 552
    with pytest.raises(smtplib.SMTPDataError) as bad:
        await asyncio.to_thread(_send, port, _message(X_Mailgun_Track="perhaps"),
                                ["a@example.org"], ("api", API_KEY))
    assert bad.value.smtp_code == 550
    await asyncio.sleep(0.2)
    assert smtp_relay.received == []


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_starttls_then_auth(service_factory: Callable[..., Any], smtp_relay: SmtpRelay,
                                  tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}",
                               smtp_tls_cert=str(cert), smtp_tls_key=str(key)) as svc:
        await svc.add_domain("example.com")

        def session() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo()
                assert client.has_extn("starttls")
                assert not client.has_extn("auth")  # no credentials in clear text
                context = ssl.create_default_context(cafile=str(cert))
                client.starttls(context=context)
                client.ehlo()
                client.login("api", API_KEY)
                client.send_message(_message(), to_addrs=["alice@example.org"])

        await asyncio.to_thread(session)
        await smtp_relay.wait_for(1)
