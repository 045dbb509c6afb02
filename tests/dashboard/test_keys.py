"""API keys on the settings page: made (the key shown once), listed, revoked."""

from __future__ import annotations

import re

from mailbeacon.domains.apikeys import Role, create_key, list_keys
from tests.dashboard.conftest import Dash

SETTINGS = "/dashboard/example.com/settings"
_KEY = re.compile(r'id="new-key">(key-[0-9a-f]+)<')


async def test_make_list_and_revoke_a_key(dash: Dash) -> None:
    await dash.service.add_domain("other.example")
    create_key(dash.db, "elsewhere", domain="other.example")  # not for this domain
    r = await dash.post(SETTINGS + "/keys", {"description": "shop <app>", "scope": "domain",
                                             "role": "send", "back": SETTINGS})
    assert r.status_code == 200
    found = _KEY.search(r.text)
    assert found, r.text
    key = found.group(1)
    assert "shop &lt;app&gt;" in r.text and "shop <app>" not in r.text
    assert r.headers["cache-control"] == "no-store"
    assert key not in r.headers.get("set-cookie", "")
    # The key works, within its scope and role.
    api = dash.service.client
    mail = {"from": "shop@example.com", "to": "a@example.org", "subject": "Hi", "text": "Hi"}
    assert (await api.post("/v3/example.com/messages", data=mail,
                           auth=("api", key))).status_code == 200
    assert (await api.get("/v3/example.com/events", auth=("api", key))).status_code == 403
    assert (await api.post("/v3/other.example/messages", data=mail,
                           auth=("api", key))).status_code == 403
    # Shown once: the page lists its prefix, never the key again.
    page = (await dash.client.get(SETTINGS)).text
    assert key not in page and key[:12] in page
    row = re.search(r'<tr data-key-id="([0-9a-z]+)">(.*?)</tr>', page, re.S)
    assert row and "example.com" in row.group(2) and "send" in row.group(2)
    assert "elsewhere" not in page  # a key of another domain is not listed here
    # Reloading the answer of the form leads back to the settings, not to a 405.
    r = await dash.client.get(SETTINGS + "/keys")
    assert r.status_code == 303 and r.headers["location"].endswith("/settings#keys")
    # Revoked: refused at once by this process.
    r = await dash.post(f"{SETTINGS}/keys/{row.group(1)}/revoke", {"back": SETTINGS})
    assert r.status_code == 303
    assert (await api.post("/v3/example.com/messages", data=mail,
                           auth=("api", key))).status_code == 401
    page = (await dash.client.get(r.headers["location"])).text
    assert f"Key {key[:12]} revoked" in page and key[:12] not in page.split("revoked")[1]
    assert [k.description for k in list_keys(dash.db)] == ["elsewhere"]


async def test_key_form_errors_are_shown(dash: Dash) -> None:
    for data, words in (({"role": "admin"}, "role must be"),
                        ({"scope": "everything"}, "Choose this domain or all domains"),
                        ({"description": "x" * 300}, "longer than 200")):
        r = await dash.post(SETTINGS + "/keys", {"back": SETTINGS, **data})
        assert r.status_code == 303, data
        assert words in (await dash.client.get(r.headers["location"])).text, data
    r = await dash.post(SETTINGS + "/keys/nope/revoke", {"back": SETTINGS})
    assert "No API key with id" in (await dash.client.get(r.headers["location"])).text
    assert list_keys(dash.db) == []
    # An all-domains full key made here can use every domain.
    r = await dash.post(SETTINGS + "/keys", {"scope": "all", "role": "full"})
    found = _KEY.search(r.text)
    assert found
    assert [(k.domain, k.role) for k in list_keys(dash.db)] == [(None, Role.FULL)]
