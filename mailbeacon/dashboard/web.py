"""What every dashboard page shares: templates, the page context, flashes, form actions.

Every POST handler is wrapped by `action`, which reads the form and checks the session's
CSRF token before the handler runs, so no handler can forget it.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.insight.contacts import Status
from mailbeacon.model.clock import shown
from mailbeacon.runtime import Runtime

from .sessions import FLASH_COOKIE, Session, SessionStore, Signer, same_token
from .throttle import LoginThrottle

PREFIX = "/dashboard"
HERE = Path(__file__).parent
FORM_PART_BYTES = 1024 * 1024  # Starlette's default: plenty for every form but imports


@dataclass
class Dashboard:
    """What the dashboard app holds, in `app.state.dashboard`."""

    runtime: Runtime
    sessions: SessionStore
    signer: Signer
    throttle: LoginThrottle
    templates: jinja2.Environment


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def session(request: Request) -> Session:
    """The logged-in session (the guard middleware lets no request through without one)."""
    found: Session | None = request.scope.get("state", {}).get("session")
    if found is None:
        raise HTTPException(403, "not logged in")
    return found


# --- formatting ------------------------------------------------------------------------



def _times(n: int) -> str:
    return f"{n} time{'s' if n != 1 else ''}"


def status_label(status: Status, opens: int, clicks: int) -> str:
    """A status in words, as the list, the message page and the contact page show it."""
    if status.status == "clicked":
        return f"Clicked {_times(clicks)}, opened {_times(opens)}"
    if status.status == "opened":
        return f"Opened {_times(opens)}"
    text = status.status.capitalize() + (f" ({status.code})" if status.code else "")
    if status.retry_at is not None:
        text += f", next retry {shown(status.retry_at)} UTC"
    if status.status in ("delivered", "queued", "sending"):
        return f"Not opened ({status.status})"
    return text


def fmt_day(seconds: int | float | None) -> str:
    """'2026-12-04': the UTC day of a time in seconds."""
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def fmt_seconds(seconds: int | float | None) -> str:
    return "—" if seconds is None else shown(seconds * 1_000_000)


def iso_us(micros: int | float | None) -> str:
    if micros is None:
        return ""
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat(timespec="seconds")


def fmt_num(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def url_path(value: str) -> str:
    """One path segment, quoted (addresses keep their @)."""
    return quote(value, safe="@")


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dt=shown, ts=fmt_seconds, iso=iso_us, num=fmt_num, pct=fmt_pct,
                       seg=url_path, qs=urlencode, status_label=status_label,
                       day=fmt_day)
    env.globals["prefix"] = PREFIX
    return env


# --- pages -----------------------------------------------------------------------------


def read_flash(request: Request) -> dict[str, str] | None:
    raw = dashboard(request).signer.unsign(request.cookies.get(FLASH_COOKIE))
    if raw is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {"kind": str(data.get("kind", "ok")), "text": str(data.get("text", ""))}


def set_flash(request: Request, response: Response, text: str, error: bool = False) -> None:
    raw = base64.urlsafe_b64encode(json.dumps(
        {"kind": "error" if error else "ok", "text": text[:500]}).encode()).decode().rstrip("=")
    response.set_cookie(FLASH_COOKIE, dashboard(request).signer.sign(raw), path=PREFIX,
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")


_COMMON = frozenset({"prefix", "request", "session", "csrf", "domain_names", "flash", "path",
                     "here", "local_outbox"})


def render(request: Request, template: str, status_code: int = 200,
           response_headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A page: the template with the common context (user, CSRF token, domains, flash)."""
    clash = _COMMON & context.keys()
    if clash:  # a page's variable would hide a common one (say, the URL prefix)
        raise ValueError(f"reserved template names: {sorted(clash)}")
    dash = dashboard(request)
    current: Session | None = request.scope.get("state", {}).get("session")
    domain_names: list[str] = []
    if current is not None:
        _, found = dom.list_domains(dash.runtime.db, limit=1000)
        domain_names = [d.name for d in found]
    flash = read_flash(request)
    page = dash.templates.get_template(template).render(
        request=request, session=current, csrf=current.csrf if current else "",
        domain_names=domain_names, flash=flash, path=request.url.path,
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        local_outbox=dash.runtime.relay is None, **context)
    response = HTMLResponse(page, status_code=status_code, headers=response_headers)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def redirect(request: Request, url: str, flash: str | None = None,
             error: bool = False) -> RedirectResponse:
    """303 See Other to `url`, with a message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        set_flash(request, response, flash, error)
    return response


def safe_back(value: str | None, default: str = PREFIX + "/") -> str:
    """A same-site dashboard path to go back to, never another site (open redirects)."""
    if (value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value
            and not any(ord(c) < 32 for c in value)):
        return value
    return default


Action = Callable[[Request, FormData], Awaitable[Response]]


def action(max_part_size: int = FORM_PART_BYTES) -> Callable[[Action], Callable[
        [Request], Awaitable[Response]]]:
    """Wrap a POST handler: read the form, check the CSRF token, turn errors into flashes.

    A BadRequest or NotFound from the handler goes back to the page the form was on
    (its hidden `back` field) with the message shown there.
    """

    def wrap(handler: Action) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            current = session(request)
            async with request.form(max_part_size=max_part_size) as form:
                token = form.get("csrf")
                if not same_token(token if isinstance(token, str) else None, current.csrf):
                    return await in_thread(
                        render, request, "error.html", status_code=403, title="Form expired",
                        message="This form was not sent from your dashboard session (or the "
                                "session changed). Go back, reload the page and try again.")
                back_field = form.get("back")
                back = safe_back(back_field if isinstance(back_field, str) else None)
                try:
                    return await handler(request, form)
                except (BadRequest, NotFound) as exc:
                    return redirect(request, back, exc.message, error=True)

        return endpoint

    return wrap


def text_field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


def checkbox(form: FormData, name: str) -> bool:
    return text_field(form, name) in ("on", "yes", "1", "true")


T = TypeVar("T")


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work (database, hashing) off the event loop."""
    return await run_in_threadpool(func, *args, **kwargs)


def get_domain(request: Request) -> dom.Domain:
    """The domain named in the path; NotFound (a 404 page) when there is none."""
    return dom.get_domain(dashboard(request).runtime.db, request.path_params["domain"])


def human_param(request: Request) -> bool:
    """The human-vs-all toggle: human hits unless `?hits=all`."""
    return request.query_params.get("hits", "human") != "all"


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw.isdigit():
        return default
    return min(max(int(raw), low), high)
