"""A domain's settings: tracking, unsubscribe footer, bounces, DKIM and DNS records, the
API keys that can use it; and its webhooks: URLs per event, signing key, delivery log
with replay.

Changes go through mailbeacon.domains.domain, mailbeacon.send.dkim, mailbeacon.domains.apikeys and
mailbeacon.webhooks, as the API's and the CLI's do.
"""

from __future__ import annotations

import contextlib

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.domains import apikeys
from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.events.fanout import WEBHOOK_IDS
from mailbeacon.send import dkim
from mailbeacon.webhooks import deliveries as wd
from mailbeacon.webhooks import store as ws

from . import dnscheck
from .web import (
    PREFIX,
    action,
    checkbox,
    dashboard,
    get_domain,
    in_thread,
    redirect,
    render,
    text_field,
)

LOG_SIZE = 50


def settings_page(request: Request) -> Response:
    return _settings(request)


def _settings(request: Request, new_key: str | None = None) -> Response:
    """The page; `new_key`: a key just made, shown this once (it is stored only hashed)."""
    domain = get_domain(request)
    runtime = dashboard(request).runtime
    records = dnscheck.records(domain, runtime.settings.base_url)
    checked = request.query_params.get("check") == "dns"
    if checked:
        records = dnscheck.check_all(records)
    tracking = dom.tracking_json(domain)
    dkim_record = None
    if domain.dkim_selector and domain.dkim_private_key:
        dkim_record = dkim.dns_record(dkim.DkimKey(domain.dkim_selector,
                                                   domain.dkim_private_key))
    return render(request, "settings.html", domain=domain, nav="settings",
                  tracking=tracking, records=records, checked=checked,
                  dkim_record=dkim_record, server_url=runtime.settings.base_url,
                  default_html=dom.DEFAULT_FOOTER_HTML, default_text=dom.DEFAULT_FOOTER_TEXT,
                  api_keys=apikeys.list_keys(runtime.db, domain=domain.name),
                  new_key=new_key)


def _back(domain: str, anchor: str) -> str:
    return f"{PREFIX}/{domain}/settings#{anchor}"


@action()
async def save_tracking(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    url = text_field(form, "tracking_url").strip()
    changes = {
        "track_opens": checkbox(form, "track_opens"),
        "track_clicks": dom.parse_click_mode(text_field(form, "track_clicks", "yes"),
                                             "track_clicks"),
        "pixel_top": checkbox(form, "pixel_top"),
        "tracking_url": dom.validate_tracking_url(url) if url else None,
        "web_scheme": dom.parse_web_scheme(text_field(form, "web_scheme")),
    }
    await in_thread(dom.update_domain, dashboard(request).runtime.db, domain.name, **changes)
    return redirect(request, _back(domain.name, "tracking"),
                    "Tracking settings saved; they apply to messages sent from now on.")


@action()
async def save_unsubscribe(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    changes = {
        "unsubscribe_footer": checkbox(form, "unsubscribe_footer"),
        "list_unsubscribe": checkbox(form, "list_unsubscribe"),
        # Empty: the built-in template.
        "footer_html": text_field(form, "footer_html").strip() or None,
        "footer_text": text_field(form, "footer_text").strip("\r\n ") or None,
    }
    for column in ("footer_html", "footer_text"):
        value = changes[column]
        if isinstance(value, str) and "%unsubscribe_url%" not in value:
            raise BadRequest("A footer must contain %unsubscribe_url%.")
    await in_thread(dom.update_domain, dashboard(request).runtime.db, domain.name, **changes)
    return redirect(request, _back(domain.name, "unsubscribe"), "Unsubscribe footer saved.")


@action()
async def save_bounces(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    limit = text_field(form, "soft_bounce_limit").strip()
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise BadRequest("The soft-bounce limit must be a whole number from 1 to 1000.")
    bounce_domain = text_field(form, "bounce_domain").strip()
    await in_thread(dom.update_domain, dashboard(request).runtime.db, domain.name,
                    soft_bounce_limit=int(limit),
                    bounce_domain=dom.normalize_name(bounce_domain) if bounce_domain else None)
    return redirect(request, _back(domain.name, "bounces"), "Bounce settings saved.")


@action()
async def new_dkim_key(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    selector = dkim.check_selector(text_field(form, "selector", "mb1"))
    bits = text_field(form, "bits", "2048")
    if not bits.isdigit():
        raise BadRequest("Choose a key size.")
    key = await in_thread(dkim.generate_key, selector, int(bits))
    await in_thread(dom.update_domain, dashboard(request).runtime.db, domain.name,
                    dkim_selector=key.selector, dkim_private_key=key.private_pem)
    return redirect(request, _back(domain.name, "dns"),
                    f"New DKIM key with selector {key.selector}: publish its TXT record.")


@action()
async def create_key(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    scope = text_field(form, "scope", "domain")
    if scope not in ("domain", "all"):
        raise BadRequest("Choose this domain or all domains.")
    key = await in_thread(apikeys.create_key, dashboard(request).runtime.db,
                          text_field(form, "description"),
                          domain=domain.name if scope == "domain" else None,
                          role=apikeys.parse_role(text_field(form, "role", "full")))
    # Answered here, not redirected: the key is never stored (nor put in a cookie).
    return await in_thread(_settings, request, key)


def keys_anchor(request: Request) -> Response:
    """GET of the page a key was made on (a reload, a relative link): the settings."""
    return redirect(request, _back(request.path_params["domain"], "keys"))


@action()
async def revoke_key(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    # Through the process's checker: refused here at once, elsewhere within seconds.
    key = await in_thread(dashboard(request).runtime.keys.revoke,
                          request.path_params["key_id"])
    return redirect(request, _back(domain.name, "keys"),
                    f"Key {key.prefix or key.id} revoked; it no longer works.")


# --- webhooks ----------------------------------------------------------------------------


def webhooks_page(request: Request) -> Response:
    domain = get_domain(request)
    db = dashboard(request).runtime.db
    status = request.query_params.get("status", "")
    if status not in wd.STATUSES:
        status = ""
    before = request.query_params.get("before") or None
    log = wd.list_deliveries(db, domain.name, status or None, LOG_SIZE + 1, before)
    more = len(log) > LOG_SIZE
    return render(request, "webhooks.html", domain=domain, nav="webhooks",
                  urls=ws.urls(db, domain.name), webhook_ids=WEBHOOK_IDS,
                  max_urls=ws.MAX_URLS, signing_key=ws.signing_key(db, domain.name),
                  log=log[:LOG_SIZE], more=more, counts=wd.counts(db, domain.name),
                  status=status, statuses=wd.STATUSES)


def _hooks(domain: str, anchor: str = "") -> str:
    return f"{PREFIX}/{domain}/webhooks" + (f"#{anchor}" if anchor else "")


@action()
async def save_webhook(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    webhook = ws.check_webhook_id(request.path_params["webhook"])
    urls = [u.strip() for u in text_field(form, "urls").splitlines() if u.strip()]
    db = dashboard(request).runtime.db
    if urls:
        await in_thread(ws.set_urls, db, domain.name, webhook, urls, True)
        text = f"Webhook {webhook} saved."
    else:
        with contextlib.suppress(NotFound):  # nothing was subscribed, nothing is: done
            await in_thread(ws.delete, db, domain.name, webhook)
        text = f"Webhook {webhook} removed."
    return redirect(request, _hooks(domain.name, "urls"), text)


@action()
async def rotate_key(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    await in_thread(ws.signing_key, dashboard(request).runtime.db, domain.name, True)
    return redirect(request, _hooks(domain.name, "key"),
                    "New signing key made; the old one no longer signs.")


@action()
async def replay(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    runtime = dashboard(request).runtime
    delivery = text_field(form, "delivery") or None
    count = await in_thread(wd.replay, runtime.db, domain.name, delivery)
    runtime.webhooks_queued()
    return redirect(request, _hooks(domain.name, "log"),
                    f"{count} deliver{'y' if count == 1 else 'ies'} will be sent again.")


routes = [
    Route("/{domain}/settings", settings_page, methods=["GET"]),
    Route("/{domain}/settings/tracking", save_tracking, methods=["POST"]),
    Route("/{domain}/settings/unsubscribe", save_unsubscribe, methods=["POST"]),
    Route("/{domain}/settings/bounces", save_bounces, methods=["POST"]),
    Route("/{domain}/settings/dkim", new_dkim_key, methods=["POST"]),
    Route("/{domain}/settings/keys", create_key, methods=["POST"]),
    Route("/{domain}/settings/keys", keys_anchor, methods=["GET"]),
    Route("/{domain}/settings/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/{domain}/webhooks", webhooks_page, methods=["GET"]),
    Route("/{domain}/webhooks/replay", replay, methods=["POST"]),
    Route("/{domain}/webhooks/rotate-key", rotate_key, methods=["POST"]),
    Route("/{domain}/webhooks/{webhook}", save_webhook, methods=["POST"]),
]
