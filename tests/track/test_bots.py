"""Bot verdicts: image proxies, Apple MPP and link scanners, on real agents and behaviour."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.track.bots import HitFacts, Thresholds, Verdict, judge

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IOS_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.109 Safari/537.36"
)
NOW = 1_700_000_000.0


def hit(**changes: Any) -> HitFacts:
    """A person's click from a home broadband line two minutes after delivery."""
    base = HitFacts(kind="click", method="GET", user_agent=CHROME_WINDOWS, ip="81.2.69.142",
                    asn=None, as_name="Andrews & Arnold Ltd", seconds_since_delivery=120.0,
                    recent_click_times=[(0, NOW)])
    return dataclasses.replace(base, **changes)


def test_a_normal_click_two_minutes_after_delivery_is_human() -> None:
    verdict = judge(hit())
    assert verdict == Verdict("", (), False)
    assert verdict.human


@pytest.mark.parametrize("agent", [
    IOS_MAIL,
    CHROME_WINDOWS,
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Microsoft Outlook 16.0.17029; Pro",
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Mobile Safari/537.36 Gmail/2024.06.23.645612345.Release",
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
])
def test_mail_clients_and_browsers_are_human(agent: str) -> None:
    for kind in ("open", "click"):
        assert judge(hit(kind=kind, user_agent=agent)) == Verdict("", (), False)


@pytest.mark.parametrize(("asn", "as_name", "ip"), [
    (714, "APPLE-ENGINEERING", "17.58.100.1"),
    (None, "APPLE-ENGINEERING", "2a01:b740::1"),
    (6185, "", "203.0.113.7"),
    (None, "", "17.0.0.1"),  # no AS data at all: Apple owns 17.0.0.0/8
])
def test_apple_mpp(asn: int | None, as_name: str, ip: str) -> None:
    verdict = judge(hit(kind="open", user_agent="Mozilla/5.0", asn=asn, as_name=as_name, ip=ip))
    assert verdict == Verdict("apple", ("apple-mpp",), True)
    assert not verdict.human  # prefetched at delivery, read or not


def test_a_person_on_apples_network_is_not_mpp() -> None:
    verdict = judge(hit(kind="open", user_agent=IOS_MAIL, as_name="APPLE-ENGINEERING",
                        ip="17.58.100.1"))
    assert verdict.human


def test_bare_agent_elsewhere_is_a_generic_bot() -> None:
    # Another company whose AS name starts with APPLE is not Apple.
    verdict = judge(hit(kind="open", user_agent="Mozilla/5.0",
                        as_name="APPLE BROADBAND SERVICES PVT. LTD", ip="203.0.113.7"))
    assert verdict == Verdict("generic", ("bare-agent",), False)


def test_gmail_proxy_is_a_proxied_human_open() -> None:
    verdict = judge(hit(kind="open", user_agent=GOOGLE_PROXY, ip="66.249.84.1", as_name="GOOGLE",
                        seconds_since_delivery=None))
    assert verdict == Verdict("gmail", ("gmail-proxy",), True)
    assert verdict.human


def test_yahoo_proxy_is_a_proxied_human_open() -> None:
    verdict = judge(hit(kind="open", user_agent=YAHOO_PROXY, as_name="YAHOO"))
    assert verdict == Verdict("generic", ("yahoo-proxy",), True)
    assert verdict.human


def test_a_proxy_hit_with_scanner_evidence_is_not_human() -> None:
    verdict = judge(hit(kind="open", user_agent=GOOGLE_PROXY, honeypot=True))
    assert verdict == Verdict("gmail", ("gmail-proxy", "honeypot"), True)
    assert not verdict.human


@pytest.mark.parametrize("agent", [
    "curl/8.4.0",
    "python-requests/2.31.0",
    HEADLESS_CHROME,
    "Go-http-client/1.1",
    "Wget/1.21.4",
    "Java/17.0.2",
    "okhttp/4.12.0",
    "libwww-perl/6.72",
    "Scrapy/2.11.0 (+https://scrapy.org)",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
    "PhantomJS/2.1.1 Safari/538.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Microsoft Office Existence Discovery",
    "Barracuda Sentinel (EE)",
])
def test_automation_agents_are_generic_bots(agent: str) -> None:
    verdict = judge(hit(user_agent=agent))
    assert verdict == Verdict("generic", ("automation-agent",), False)
    assert not verdict.human


@pytest.mark.parametrize("agent", ["", "   "])
def test_empty_agent(agent: str) -> None:
    assert judge(hit(user_agent=agent)) == Verdict("generic", ("empty-agent",), False)


def test_head_request() -> None:
    assert judge(hit(method="HEAD")) == Verdict("generic", ("head-request",), False)
    assert judge(hit(kind="open", method="head")).reasons == ("head-request",)


def test_click_two_seconds_after_delivery() -> None:
    assert judge(hit(seconds_since_delivery=2.0)) == Verdict("generic", ("fast-click",), False)
    assert judge(hit(kind="unsubscribe", seconds_since_delivery=1.0)).reasons == ("fast-click",)
    assert judge(hit(seconds_since_delivery=3.0)).human
    assert judge(hit(seconds_since_delivery=None)).human
    # A person may open a message as it arrives; only clicks are timed.
    assert judge(hit(kind="open", seconds_since_delivery=0.5)).human


def test_burst_of_three_links_in_half_a_second() -> None:
    clicks = [(0, NOW), (1, NOW + 0.25), (2, NOW + 0.5)]
    assert judge(hit(recent_click_times=clicks)) == Verdict("generic", ("click-burst",), False)
    # The clicks before the burst was complete were judged on what was known then.
    assert judge(hit(recent_click_times=clicks[:2])).human


def test_no_burst_when_slow_or_the_same_link() -> None:
    assert judge(hit(recent_click_times=[(0, NOW), (1, NOW + 2), (2, NOW + 4)])).human
    assert judge(hit(recent_click_times=[(0, NOW), (0, NOW + 0.1), (0, NOW + 0.2)])).human
    # An old burst does not taint a later click.
    old_burst = [(0, NOW), (1, NOW + 0.1), (2, NOW + 0.2), (3, NOW + 600)]
    assert judge(hit(recent_click_times=old_burst)).human


@pytest.mark.parametrize(("asn", "as_name"), [
    (8075, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    (8075, ""),
    (None, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    (None, "PROOFPOINT-ASN-US-WEST"),
    (None, "Proofpoint, Inc."),
    (None, "MIMECAST"),
    (None, "Mimecast Services Limited"),
    (None, "BARRACUDA-NETWORKS-INC"),
    (None, "IRONPORT-SYSTEMS-INC"),
    (44444, "Forcepoint Cloud Ltd"),
    (None, "AS-TRENDMICRO-COM"),
])
def test_security_vendor_networks(asn: int | None, as_name: str) -> None:
    verdict = judge(hit(asn=asn, as_name=as_name))
    assert verdict == Verdict("generic", ("scanner-network",), False)


@pytest.mark.parametrize("as_name", ["MICROSOFT-CORP-AS", "GOOGLE", "ZSCALER-INC", "YAHOO"])
def test_other_big_networks_are_not_scanners(as_name: str) -> None:
    assert judge(hit(as_name=as_name)).human


def test_honeypot() -> None:
    assert judge(hit(honeypot=True)) == Verdict("generic", ("honeypot",), False)


def test_every_reason_is_kept_in_rule_order() -> None:
    verdict = judge(hit(method="HEAD", user_agent="curl/8.4.0", asn=8075,
                        seconds_since_delivery=1.0))
    assert verdict == Verdict(
        "generic", ("head-request", "automation-agent", "scanner-network", "fast-click"), False)


def test_one_click_unsubscribe_post_is_human() -> None:
    # RFC 8058: Outlook.com posts from Microsoft's network, with whatever agent it likes.
    facts = hit(kind="unsubscribe", method="POST", user_agent="", asn=8075,
                seconds_since_delivery=1.0)
    assert judge(facts).human


def test_thresholds_are_per_domain() -> None:
    strict = Thresholds(click_after_delivery_seconds=10, burst_links=2, burst_seconds=0.2)
    assert judge(hit(seconds_since_delivery=5.0), strict).reasons == ("fast-click",)
    assert judge(hit(seconds_since_delivery=5.0)).human
    pair = [(0, NOW), (1, NOW + 0.1)]
    assert judge(hit(recent_click_times=pair), strict).reasons == ("click-burst",)


def test_thresholds_json() -> None:
    assert Thresholds.from_json(None) == Thresholds.from_json({}) == Thresholds()
    assert Thresholds().to_json() == {
        "click_after_delivery_seconds": 3.0, "burst_links": 3, "burst_seconds": 1.0}
    partial = Thresholds.from_json({"burst_links": 4, "click_after_delivery_seconds": 5})
    assert partial == Thresholds(5.0, 4, 1.0)
    assert isinstance(partial.to_json()["click_after_delivery_seconds"], float)
    assert Thresholds.from_json(partial.to_json()) == partial


@pytest.mark.parametrize(("data", "message"), [
    ({"click_after_delivery_seconds": -1}, "click_after_delivery_seconds must be"),
    ({"click_after_delivery_seconds": "3"}, "click_after_delivery_seconds must be"),
    ({"click_after_delivery_seconds": math.nan}, "click_after_delivery_seconds must be"),
    ({"burst_seconds": True}, "burst_seconds must be"),
    ({"burst_seconds": math.inf}, "burst_seconds must be"),
    ({"burst_links": 1}, "burst_links must be an integer >= 2"),
    ({"burst_links": 2.5}, "burst_links must be"),
    ({"burst_links": None}, "burst_links must be"),
    ({"burst_link": 3}, "unknown bot threshold"),
])
def test_bad_thresholds_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds.from_json(data)


BOTS = ("", "apple", "gmail", "generic")


@given(
    kind=st.sampled_from(["open", "click", "unsubscribe"]) | st.text(max_size=10),
    method=st.sampled_from(["GET", "HEAD", "POST"]) | st.text(max_size=10),
    user_agent=st.text(max_size=300),
    ip=st.text(max_size=50) | st.ip_addresses().map(str),
    asn=st.none() | st.integers(),
    as_name=st.text(max_size=50),
    seconds=st.none() | st.floats(),
    clicks=st.lists(st.tuples(st.integers(), st.floats()), max_size=8),
    honeypot=st.booleans(),
)
def test_judge_never_raises(kind: str, method: str, user_agent: str, ip: str, asn: int | None,
                            as_name: str, seconds: float | None, clicks: list[tuple[int, float]],
                            honeypot: bool) -> None:
    verdict = judge(HitFacts(kind, method, user_agent, ip, asn, as_name, seconds, clicks,
                             honeypot))
    assert verdict.bot in BOTS
    assert (verdict.bot == "") == (verdict.reasons == ())
    reasons = set(verdict.reasons)
    assert verdict.human == (reasons <= {"gmail-proxy", "yahoo-proxy"})
    assert verdict.proxied == bool(reasons & {"apple-mpp", "gmail-proxy", "yahoo-proxy"})
