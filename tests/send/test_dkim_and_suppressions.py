"""DKIM signatures that verify against the published key; suppressions at send."""

from __future__ import annotations

import asyncio
import re

import dkim
import pytest
from click.testing import CliRunner

from mailbeacon.cli import main
from mailbeacon.model.clock import now_us
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import SuppressionKind
from tests.support import Service, SmtpRelay


async def test_dkim_cli_and_signature(service: Service, smtp_relay: SmtpRelay,
                                      database_url: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["domains", "dkim", "example.com", "--selector", "mb2025",
                                   "--database-url", database_url])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    name, txt = re.match(r"^(\S+)\. IN TXT (.+)$", line).groups()  # type: ignore[union-attr]
    assert name == "mb2025._domainkey.example.com"
    record = "".join(re.findall(r'"([^"]*)"', txt))
    assert record.startswith("v=DKIM1; k=rsa; p=")

    await service.send(to="alice@example.org", subject="Signed", text="hello",
                       html="<p>hello</p>")
    (item,) = await smtp_relay.wait_for(1)

    def dns(qname: bytes, timeout: int = 5) -> bytes | None:
        return record.encode() if qname == f"{name}.".encode() else None

    assert dkim.verify(item.data, dnsfunc=dns)
    signature = item.message["DKIM-Signature"]
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", signature.replace("\r\n", "")
                                                    ).group(1).split(":")}  # type: ignore[union-attr]
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    assert "d=example.com" in signature and "s=mb2025" in signature
    # Tampering breaks it.
    tampered = item.data.replace(b"Subject: Signed", b"Subject: Signet")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_cli_errors(database_url: str) -> None:
    result = CliRunner().invoke(main, ["domains", "dkim", "nope.example.com",
                                       "--database-url", database_url])
    assert result.exit_code == 1 and "Domain not found" in result.output
    result = CliRunner().invoke(main, ["domains", "add", "ok.example.com",
                                       "--database-url", database_url])
    result = CliRunner().invoke(main, ["domains", "dkim", "ok.example.com", "--selector",
                                       "bad selector", "--database-url", database_url])
    assert result.exit_code == 1 and "selector" in result.output


@pytest.mark.parametrize(("kind", "tag", "reason"), [
    (SuppressionKind.BOUNCE, "", "suppress-bounce"),
    (SuppressionKind.COMPLAINT, "", "suppress-complaint"),
    (SuppressionKind.UNSUBSCRIBE, "*", "suppress-unsubscribe"),
    (SuppressionKind.UNSUBSCRIBE, "promo", "suppress-unsubscribe"),
])
async def test_suppressed_recipients_are_not_relayed(service: Service, smtp_relay: SmtpRelay,
                                                     kind: SuppressionKind, tag: str,
                                                     reason: str) -> None:
    with service.runtime.db.write() as conn:
        suppressions.add(conn, "example.com", kind, "Blocked@Example.org", now_us(), tag=tag,
                         code="550", error="No such user")
    await service.send(to=["blocked@example.org", "fine@example.org"], subject="x", text="y",
                       **{"o:tag": "promo"})
    (failed,) = await service.wait_events(1, event="failed")
    assert failed["recipient"] == "blocked@example.org"
    assert failed["reason"] == reason and failed["severity"] == "permanent"
    await service.wait_events(1, event="delivered")
    await asyncio.sleep(0.2)
    assert [r.recipients[0] for r in smtp_relay.received] == ["fine@example.org"]


async def test_allowlist_wins_over_bounces_not_unsubscribes(service: Service,
                                                            smtp_relay: SmtpRelay) -> None:
    now = now_us()
    with service.runtime.db.write() as conn:
        suppressions.add(conn, "example.com", SuppressionKind.BOUNCE, "a@example.org", now)
        suppressions.add(conn, "example.com", SuppressionKind.COMPLAINT, "b@partner.example",
                         now)
        suppressions.add(conn, "example.com", SuppressionKind.UNSUBSCRIBE, "c@example.org",
                         now, tag="*")
        suppressions.add(conn, "example.com", SuppressionKind.ALLOWLIST, "a@example.org", now)
        suppressions.add(conn, "example.com", SuppressionKind.ALLOWLIST, "partner.example",
                         now)
        suppressions.add(conn, "example.com", SuppressionKind.ALLOWLIST, "c@example.org", now)
    await service.send(to=["a@example.org", "b@partner.example", "c@example.org"],
                       subject="x", text="y")
    await service.wait_events(2, event="delivered")
    (failed,) = await service.wait_events(1, event="failed")
    assert failed["recipient"] == "c@example.org"
    assert sorted(r.recipients[0] for r in smtp_relay.received) == [
        "a@example.org", "b@partner.example"]


async def test_suppressions_are_per_domain(service: Service, smtp_relay: SmtpRelay) -> None:
    await service.add_domain("other.example.com")
    with service.runtime.db.write() as conn:
        suppressions.add(conn, "other.example.com", SuppressionKind.BOUNCE, "a@example.org",
                         now_us())
    await service.send(to="a@example.org", subject="x", text="y")
    await service.wait_events(1, event="delivered")
