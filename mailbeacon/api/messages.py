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
from mailbeacon.send.controls import controls_from_headers, parse_delivery_time, parse_variable
from mailbeacon.send.headers import safe_filename
from mailbeacon.send.intake import accept, accept_mime
from mailbeacon.send.submission import (
    Attachment,
    DeliveryOptions,
    Submission,
    TrackingOptions,
)

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@requires(SEND)
async def send_message(request: Request) -> JSONResponse:
    rt = runtime(request)
    domain = path_domain(request)
    form = await read_form(request)
    submission = submission_from_form(form, await _attachments(form))
    message_id = await run_in_threadpool(accept, rt.db, domain, submission)
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
    controls = controls_from_headers(data)
    variables = {**controls.variables, **_variables(form)}
    tags = text_fields(form, "o:tag") or controls.tags
    options = _tracking_options(form, controls.options)
    message_id = await run_in_threadpool(
        accept_mime, rt.db, domain, controls.stripped, None, recipients, tags, variables,
        options, _delivery_options(form, controls.delivery))
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
    return Submission(
        sender=senders[0],
        to=to,
        cc=parse_mailboxes(text_fields(form, "cc"), "cc"),
        bcc=parse_mailboxes(text_fields(form, "bcc"), "bcc"),
        subject=text_field(form, "subject") or "",
        text=text_field(form, "text"),
        html=text_field(form, "html"),
        tags=text_fields(form, "o:tag"),
        headers=headers,
        variables=_variables(form),
        options=_tracking_options(form, TrackingOptions()),
        attachments=attachments,
        delivery=_delivery_options(form, DeliveryOptions()),
    )


def _flag(form: FormData, name: str) -> bool | None:
    value = text_field(form, name)
    return None if value is None else dom.parse_bool(value, name)


def _tracking_options(form: FormData, defaults: TrackingOptions) -> TrackingOptions:
    """o: fields, over the defaults (e.g. from X-Mailgun-Track headers)."""
    clicks = text_field(form, "o:tracking-clicks")
    found = TrackingOptions(
        tracking=_flag(form, "o:tracking"),
        opens=_flag(form, "o:tracking-opens"),
        clicks=None if clicks is None else dom.parse_click_mode(clicks, "o:tracking-clicks"),
        pixel_top=_flag(form, "o:tracking-pixel-location-top"),
    )
    return TrackingOptions(*(
        mine if mine is not None else default
        for mine, default in zip(found.to_json().values(), defaults.to_json().values(),
                                 strict=True)))


def _variables(form: FormData) -> dict[str, Any]:
    return {key[2:]: parse_variable(text_field(form, key) or "")
            for key in form if key.startswith("v:")}


def _delivery_options(form: FormData, defaults: DeliveryOptions) -> DeliveryOptions:
    """o:testmode, o:deliverytime and recipient-variables, over the defaults."""
    when = text_field(form, "o:deliverytime")
    testmode = _flag(form, "o:testmode")
    rvars = _recipient_variables(form)
    return DeliveryOptions(
        testmode=defaults.testmode if testmode is None else testmode,
        deliver_at=parse_delivery_time(when) if when else defaults.deliver_at,
        recipient_variables=defaults.recipient_variables if rvars is None else rvars,
    )


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
