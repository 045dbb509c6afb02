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

from mailbeacon import domains as dom
from mailbeacon.addresses import parse_mailboxes
from mailbeacon.api.forms import read_form, required, runtime, text_field, text_fields
from mailbeacon.errors import BadRequest
from mailbeacon.send.intake import accept
from mailbeacon.send.submission import Attachment, Submission, TrackingOptions

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


async def send_message(request: Request) -> JSONResponse:
    rt = runtime(request)
    domain = await run_in_threadpool(dom.get_domain, rt.db, request.path_params["domain"])
    form = await read_form(request)
    submission = submission_from_form(form, await _attachments(form))
    message_id = await run_in_threadpool(accept, rt.db, domain, submission)
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
    variables: dict[str, Any] = {}
    for key in form:
        if key.startswith("h:"):
            headers.extend((key[2:], value) for value in text_fields(form, key))
        elif key.startswith("v:"):
            variables[key[2:]] = _variable(text_field(form, key) or "")
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
        variables=variables,
        options=_tracking_options(form),
        attachments=attachments,
    )


def _tracking_options(form: FormData) -> TrackingOptions:
    def flag(name: str) -> bool | None:
        value = text_field(form, name)
        return None if value is None else dom.parse_bool(value, name)

    clicks = text_field(form, "o:tracking-clicks")
    return TrackingOptions(
        tracking=flag("o:tracking"),
        opens=flag("o:tracking-opens"),
        clicks=None if clicks is None else dom.parse_click_mode(clicks, "o:tracking-clicks"),
        pixel_top=flag("o:tracking-pixel-location-top"),
    )


def _variable(value: str) -> Any:
    """v: values stay strings, except JSON objects and arrays, which events show parsed."""
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


async def _attachments(form: FormData) -> list[Attachment]:
    found: list[Attachment] = []
    for field, inline in (("attachment", False), ("inline", True)):
        for item in form.getlist(field):
            if not isinstance(item, UploadFile):
                raise BadRequest(f"'{field}' must be a file (multipart/form-data)")
            filename = (item.filename or "attachment").replace("\r", "").replace("\n", "")
            content_type = (item.content_type or "").lower().split(";")[0].strip()
            if not _CONTENT_TYPE.match(content_type) or content_type.startswith("multipart/"):
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            found.append(Attachment(filename, content_type, await item.read(), inline))
    return found


routes = [Route("/v3/{domain}/messages", send_message, methods=["POST"])]
