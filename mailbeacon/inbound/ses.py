"""Amazon SES notifications mailed as JSON (directly or inside an SNS envelope).

SES documents this format (notificationType Bounce / Complaint / Delivery), and senders
that relayed through SES receive it by mail; it carries exact recipients and DSN fields.
"""

from __future__ import annotations

import json
from typing import Any

from mailbeacon.events.bounces import Evidence
from mailbeacon.events.codes import first_address, one_line
from mailbeacon.events.reasons import Reason
from mailbeacon.inbound.bounce import bounce_result
from mailbeacon.inbound.message import Mail
from mailbeacon.inbound.result import Kind, Result, kept_headers, message_id

MAX_JSON = 512 * 1024


def _objects(text: str) -> list[dict[str, Any]]:
    """The JSON object starting at the first "{" of `text`, and the SES one an SNS envelope
    carries as a string. Long lines may have been broken by a relay ("!" newline space, as
    Sendmail does past 990 characters, or plain folding), so unbroken variants are tried.
    """
    decoder = json.JSONDecoder()
    variants = (text, text.replace("!\n ", ""), text.replace("!\n ", "").replace("\n ", ""))
    for candidate in variants:
        start = candidate.find("{")
        if start < 0 or start > MAX_JSON:
            return []
        try:
            value, _ = decoder.raw_decode(candidate, start)
        except ValueError:
            continue
        if not isinstance(value, dict):
            return []
        inner = value.get("Message")
        if isinstance(inner, str) and "notificationType" in inner:
            return [value, *_objects(inner)]
        return [value]
    return []


def _notification(mail: Mail) -> dict[str, Any] | None:
    for text in mail.texts:
        if "notificationType" not in text:
            continue
        for value in _objects(text[:MAX_JSON]):
            if isinstance(value.get("notificationType"), str):
                return value
    return None


def _original(note: dict[str, Any]) -> dict[str, str]:
    """Headers of the sent message, as SES reports them under mail.headers."""
    headers: dict[str, str] = {}
    mail = note.get("mail")
    items = mail.get("headers") if isinstance(mail, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            headers.setdefault(item["name"].lower(), one_line(str(item.get("value", ""))))
    return headers


def _dict(container: object, key: str) -> dict[str, Any]:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, dict) else {}


def _list(container: object, key: str) -> list[Any]:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, list) else []


def ses_results(mail: Mail) -> list[Result] | None:
    """Results of an SES notification, or None if `mail` is not one."""
    note = _notification(mail)
    if note is None:
        return None
    kind = str(note["notificationType"]).lower()
    original = _original(note)
    if kind == "complaint":
        body = _dict(note, "complaint")
        recipients = _list(body, "complainedRecipients")
        first = recipients[0] if recipients and isinstance(recipients[0], dict) else {}
        return [Result(
            kind=Kind.COMPLAINT,
            recipient=first_address(str(first.get("emailAddress", ""))),
            reason=Reason.FEEDBACK.value,
            feedback_type=str(body.get("complaintFeedbackType") or "abuse").lower(),
            reporter=one_line(str(body.get("userAgent", "")), 255),
            original_message_id=message_id(original.get("message-id", "")),
            original_headers=kept_headers(original),
        )]
    results: list[Result] = []
    if kind == "bounce":
        body = _dict(note, "bounce")
        for item in _list(body, "bouncedRecipients"):
            if not isinstance(item, dict):
                continue
            evidence = Evidence(
                recipient=first_address(str(item.get("emailAddress", ""))),
                status=str(item.get("status", "") or ""),
                diagnostic=str(item.get("diagnosticCode", "") or "").split(";", 1)[-1],
                action=str(item.get("action", "") or "").lower(),
                remote_mta=str(body.get("remoteMtaIp", "") or ""),
            )
            results.append(bounce_result(evidence, original))
    elif kind == "delivery":
        body = _dict(note, "delivery")
        for recipient in _list(body, "recipients"):
            evidence = Evidence(
                recipient=first_address(str(recipient)),
                diagnostic=str(body.get("smtpResponse", "") or ""),
                action="delivered",
                remote_mta=str(body.get("reportingMTA", "") or ""),
            )
            results.append(bounce_result(evidence, original))
    return results or None
