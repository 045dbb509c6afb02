"""Sending API: POST /v3/{domain}/messages with Mailgun's fields."""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import SEND, path_domain, requires
from mailbeacon.api.forms import read_form, required, runtime, text_field, text_fields
from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest
from mailbeacon.model.addresses import parse_mailboxes
from mailbeacon.send.controls import Overrides, parse_delivery_time, parse_variable
from mailbeacon.send.headers import safe_filename
from mailbeacon.send.mime import from_mime
from mailbeacon.send.options import TrackingOptions
from mailbeacon.send.submission import Attachment, Submission

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@requires(SEND)
async def send_message(request: Request) -> JSONResponse:
    rt = runtime(request)
    domain = path_domain(request)
    form = await read_form(request)
    submission = submission_from_form(form, await _attachments(form))

    def queue() -> str:  # builds MIME and writes: off the event loop
        return rt.intake.accept(domain, submission.outgoing(domain.name))

    message_id = await run_in_threadpool(queue)
    rt.message_queued()
    return JSONResponse({"id": f"<{message_id}>", "message": "Queued. Thank you."})


@requires(SEND)
async def send_mime(request: Request) -> JSONResponse:
    """messages.mime: the message as raw MIME in `message`, recipients in `to`."""
    rt = runtime(request)
    domain = path_domain(request)
    form = await read_form(request)
    values = form.getlist("message")
    if not values:
        raise BadRequest("'message' parameter is missing")
    raw = values[-1]
    data = await raw.read() if isinstance(raw, UploadFile) else raw.encode("utf-8")
    recipients = [a for _, a in parse_mailboxes(text_fields(form, "to"), "to")]
    overrides = _overrides(form)

    def queue() -> str:  # parses MIME and writes: off the event loop
        return rt.intake.accept(domain, from_mime(data, domain.name, recipients,
                                                  overrides=overrides))

    message_id = await run_in_threadpool(queue)
    rt.message_queued()
    return JSONResponse({"id": f"<{message_id}>", "message": "Queued. Thank you."})


def submission_from_form(form: FormData, attachments: list[Attachment]) -> Submission:
    senders = parse_mailboxes([required(form, "from")], "from")
    if len(senders) != 1:
        raise BadRequest("'from' parameter must be exactly one address")
    to = parse_mailboxes(text_fields(form, "to"), "to")
    if not to:
        raise BadRequest("'to' parameter is missing")
    headers: list[tuple[str, str]] = []
    for key in form:
        if key.startswith("h:"):
            headers.extend((key[2:], value) for value in text_fields(form, key))
    fields = _overrides(form)
    return Submission(
        sender=senders[0],
        to=to,
        cc=parse_mailboxes(text_fields(form, "cc"), "cc"),
        bcc=parse_mailboxes(text_fields(form, "bcc"), "bcc"),
        subject=text_field(form, "subject") or "",
        text=text_field(form, "text"),
        html=text_field(form, "html"),
        tags=fields.tags,
        headers=headers,
        variables=fields.variables,
        options=fields.options,
        attachments=attachments,
        delivery=fields.delivery(),
    )


def _flag(form: FormData, name: str) -> bool | None:
    value = text_field(form, name)
    return None if value is None else dom.parse_bool(value, name)


def _overrides(form: FormData) -> Overrides:
    """o:tag, v:, o:tracking*, o:testmode, o:deliverytime and recipient-variables."""
    clicks = text_field(form, "o:tracking-clicks")
    when = text_field(form, "o:deliverytime")
    return Overrides(
        tags=text_fields(form, "o:tag"),
        variables=_variables(form),
        options=TrackingOptions(
            tracking=_flag(form, "o:tracking"),
            opens=_flag(form, "o:tracking-opens"),
            clicks=None if clicks is None else dom.parse_click_mode(clicks,
                                                                    "o:tracking-clicks"),
            pixel_top=_flag(form, "o:tracking-pixel-location-top"),
        ),
        testmode=_flag(form, "o:testmode"),
        deliver_at=parse_delivery_time(when) if when else None,
        recipient_variables=_recipient_variables(form),
    )


def _variables(form: FormData) -> dict[str, Any]:
    return {key[2:]: parse_variable(text_field(form, key) or "")
            for key in form if key.startswith("v:")}


def _recipient_variables(form: FormData) -> dict[str, dict[str, Any]] | None:
    raw = text_field(form, "recipient-variables")
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"'recipient-variables' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise BadRequest("'recipient-variables' must be a JSON object of "
                         '{"address": {"name": "value", ...}, ...}')
    return {str(k).strip().lower(): v for k, v in data.items()}


async def _attachments(form: FormData) -> list[Attachment]:
    found: list[Attachment] = []
    for field, inline in (("attachment", False), ("inline", True)):
        for item in form.getlist(field):
            if not isinstance(item, UploadFile):
                raise BadRequest(f"'{field}' must be a file (multipart/form-data)")
            filename = safe_filename(item.filename or "")
            content_type = (item.content_type or "").lower().split(";")[0].strip()
            if not _CONTENT_TYPE.match(content_type) or content_type.startswith("multipart/"):
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            found.append(Attachment(filename, content_type, await item.read(), inline))
    return found


routes = [
    Route("/v3/{domain}/messages", send_message, methods=["POST"]),
    Route("/v3/{domain}/messages.mime", send_mime, methods=["POST"]),
]
