"""Client info from user agents and geolocation from IPs, on the data shipped in packages."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.errors import ConfigError
from mailbeacon.track.enrich import NO_GEO, ClientInfo, Geo, GeoLookup, client_info

OUTLOOK_WINDOWS = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; "
    ".NET4.0E; Microsoft Outlook 16.0.5422; ms-office; MSOffice 16)"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.109 Safari/537.36"
)
GMAIL_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Mobile Safari/537.36 Gmail/2024.06.23.645612345.Release"
)

# (user agent, client name, client type, OS, device)
CLIENTS = [
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
     "Gmail", "email client", "unknown", "unknown"),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
     "Yahoo Mail", "email client", "unknown", "unknown"),
    ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
     "Outlook", "email client", "Windows", "desktop"),
    ("Microsoft Outlook 16.0.17029; Pro", "Outlook", "email client", "Windows", "desktop"),
    (OUTLOOK_WINDOWS, "Outlook", "email client", "Windows", "desktop"),
    ("Microsoft Office/16.0 (Macintosh; Mac OS X 10.15; Microsoft Outlook 16.80.1206; Pro)",
     "Outlook", "email client", "macOS", "desktop"),
    ("Outlook-iOS/709.2189947.prod.iphone (4.2.1)", "Outlook", "email client", "iOS", "mobile"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Mobile/15E148", "Apple Mail", "email client", "iOS", "mobile"),
    ("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Mobile/15E148", "Apple Mail", "email client", "iOS", "tablet"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
     "Apple Mail", "email client", "macOS", "desktop"),
    (GMAIL_ANDROID, "Gmail", "email client", "Android", "mobile"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0",
     "Thunderbird", "email client", "Linux", "desktop"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Thunderbird/115.5.0",
     "Thunderbird", "email client", "Windows", "desktop"),
    (CHROME_WINDOWS, "Chrome", "browser", "Windows", "desktop"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
     "Safari", "mobile browser", "iOS", "mobile"),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36", "Chrome", "mobile browser", "Android", "tablet"),
    ("Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Mobile Safari/537.36 GSA/14.50.15.29.arm64",
     "Google App", "mobile browser", "Android", "mobile"),
    ("curl/8.4.0", "curl", "library", "unknown", "unknown"),
    ("python-requests/2.31.0", "python-requests", "library", "unknown", "unknown"),
    ("python-httpx/0.27.0", "python-httpx", "library", "unknown", "unknown"),
    (HEADLESS_CHROME, "HeadlessChrome", "robot", "Linux", "unknown"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
     "bingbot", "robot", "unknown", "unknown"),
    # Apple MPP's bare agent names nothing; bots.judge tells it apart by the network.
    ("Mozilla/5.0", "unknown", "unknown", "unknown", "unknown"),
]


@pytest.mark.parametrize(("agent", "name", "kind", "os", "device"), CLIENTS)
def test_client_info_of_real_agents(agent: str, name: str, kind: str, os: str,
                                    device: str) -> None:
    assert client_info(agent) == ClientInfo(name, kind, os, device, agent)


def test_empty_agent_is_unknown() -> None:
    for agent in ("", "   "):
        info = client_info(agent)
        assert (info.client_name, info.client_type, info.client_os, info.device_type) == (
            "unknown", "unknown", "unknown", "unknown")
        assert info.user_agent == agent


def test_client_info_json_uses_mailgun_keys() -> None:
    assert client_info(CHROME_WINDOWS).to_json() == {
        "client-name": "Chrome", "client-type": "browser", "client-os": "Windows",
        "device-type": "desktop", "user-agent": CHROME_WINDOWS,
    }


def test_client_info_is_cached() -> None:
    assert client_info(CHROME_WINDOWS) is client_info(CHROME_WINDOWS)


def test_long_agents_are_not_cached() -> None:
    """The cache is bounded in entries, so each entry must be small: an agent of a few
    KB (a request head may carry 64 KiB) is parsed again rather than kept."""
    long_agent = CHROME_WINDOWS + " x" * 2000
    assert client_info(long_agent) == client_info(long_agent)
    assert client_info(long_agent) is not client_info(long_agent)
    assert client_info(long_agent).client_name == "Chrome"


@given(st.text(max_size=3000))
def test_client_info_never_raises(agent: str) -> None:
    info = client_info(agent)
    assert info.user_agent == agent
    assert info.device_type in ("desktop", "mobile", "tablet", "unknown")


GEO = GeoLookup()  # loads the bundled data once for the module (about 0.25 s)

# What geoip2fast 1.2.2's bundled GeoLite2 data (2024-06-18) says; AS names, no AS numbers.
KNOWN_IPS = [
    ("17.0.0.1", "US", "APPLE-ENGINEERING"),
    ("8.8.8.8", "US", "GOOGLE"),
    ("66.249.84.1", "US", "GOOGLE"),  # Google's image proxy range
    ("1.1.1.1", "AU", "CLOUDFLARENET"),
    ("81.2.69.142", "GB", "Andrews & Arnold Ltd"),
    ("2001:4860:4860::8888", "US", "GOOGLE"),
    ("2a01:b740::1", "IE", "APPLE-ENGINEERING"),
    ("40.107.0.1", "FR", "MICROSOFT-CORP-MSN-AS-BLOCK"),
    ("::ffff:8.8.8.8", "US", "GOOGLE"),
    # In no AS range of the data; geoip2fast alone says INMARSAT-GOVERNMENT-1 (a gap bug).
    ("64.235.144.1", "US", ""),
]


@pytest.mark.parametrize(("ip", "country", "as_name"), KNOWN_IPS)
def test_country_and_network_of_known_ips(ip: str, country: str, as_name: str) -> None:
    assert GEO.lookup(ip) == Geo(country=country, as_name=as_name)


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.1.1", "127.0.0.1", "::1", "fe80::1%eth0",
                                "100.64.0.1", "0.0.0.0", "", "not an ip", "999.1.1.1",
                                "127.1", " ", "8.8.8.8/24"])
def test_private_and_malformed_addresses_have_no_place(ip: str) -> None:
    assert GEO.lookup(ip) == NO_GEO


def test_geo_json_is_mailgun_geolocation() -> None:
    assert Geo(country="US", as_name="GOOGLE").to_json() == {
        "country": "US", "region": "", "city": ""}
    assert Geo("GB", "ENG", "London", 51.5, -0.12).to_json() == {
        "country": "GB", "region": "ENG", "city": "London",
        "latitude": 51.5, "longitude": -0.12}


def test_lookups_are_thread_safe() -> None:
    ips = [ip for ip, _, _ in KNOWN_IPS] * 50
    expected = [GEO.lookup(ip) for ip in ips]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(GeoLookup().lookup, ips)) == expected


@given(st.text(max_size=100))
def test_lookup_never_raises(ip: str) -> None:
    assert isinstance(GEO.lookup(ip), Geo)


def test_loading_does_not_change_the_environment() -> None:
    # geoip2fast sets PYTHONWARNINGS=ignore on import; our subprocesses must not inherit it.
    code = ("import os; from mailbeacon.track.enrich import GeoLookup, geo_data_loaded; "
            "GeoLookup().lookup('81.2.69.142'); assert geo_data_loaded(); "
            "print(os.environ.get('PYTHONWARNINGS'), os.environ.get('PYTHONIOENCODING'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": ""}).stdout
    assert out.split() == ["None", "None"]


def test_missing_or_invalid_city_db_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the MaxMind City database"):
        GeoLookup(str(tmp_path / "missing.mmdb"))
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a maxmind database" * 100)
    with pytest.raises(ConfigError, match="cannot read"):
        GeoLookup(str(garbage))


def _write_mmdb(path: Path, database_type: str, networks: dict[str, object]) -> str:
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(6, database_type, ipv4_compatible=True)
    for network, record in networks.items():
        writer.insert_network(netaddr.IPSet([network]), record)
    writer.to_db_file(str(path))
    return str(path)


def test_an_asn_database_is_not_a_city_database(tmp_path: Path) -> None:
    path = _write_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN",
                       {"8.8.8.0/24": {"autonomous_system_number": 15169}})
    with pytest.raises(ConfigError, match="GeoLite2-ASN database"):
        GeoLookup(path)


def test_city_database_adds_region_city_and_coordinates(tmp_path: Path) -> None:
    london = {
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        "city": {"names": {"en": "London"}},
        "location": {"latitude": 51.5142, "longitude": -0.0931},
    }
    mountain_view = {"registered_country": {"iso_code": "US"},
                     "subdivisions": [{"names": {"en": "California"}}],
                     "city": {"names": {"en": "Mountain View"}}}
    path = _write_mmdb(tmp_path / "city.mmdb", "GeoIP2-City",
                       {"81.2.69.0/24": london, "2001:4860::/32": mountain_view})
    city = GeoLookup(path)
    assert city.lookup("81.2.69.142") == Geo("GB", "ENG", "London", 51.5142, -0.0931,
                                             None, "Andrews & Arnold Ltd")
    assert city.lookup("2001:4860:4860::8888") == Geo(
        "US", "California", "Mountain View", as_name="GOOGLE")
    # Not in the City database: the bundled country still answers.
    assert city.lookup("17.0.0.1") == Geo("US", as_name="APPLE-ENGINEERING")
    assert city.lookup("10.0.0.1") == NO_GEO


# Run in a fresh interpreter: this one has loaded the geo data long ago (GEO above).
_LAZY = """
import json, os, sys, time
from mailbeacon.runtime import Runtime
from mailbeacon.settings import Settings
from mailbeacon.track.enrich import GeoLookup, geo_data_loaded

url, spool, recording = sys.argv[1:4]
settings = Settings(database_url=url, spool_dir=spool, recording=recording)
seen = {}
serve = Runtime(settings)  # serve itself
extra = Runtime(settings, serve_pid=os.getppid())  # a further HTTP process of it
seen["at_start"] = geo_data_loaded() or "geoip2fast" in sys.modules
deadline = time.monotonic() + 30  # commit mode: loaded now, in the background
while recording == "commit" and not geo_data_loaded() and time.monotonic() < deadline:
    time.sleep(0.05)
seen["soon"] = geo_data_loaded()
seen["first_lookup"] = GeoLookup().lookup("81.2.69.142").country
seen["after"] = geo_data_loaded()
for runtime in (serve, extra):
    runtime.db.dispose()
print(json.dumps(seen))
"""


def _geo_in_runtimes(database_url: str, tmp_path: Path, recording: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _LAZY, database_url, str(tmp_path / "spool"),
                          recording], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return dict(json.loads(out.splitlines()[-1]))


def test_journal_processes_do_not_load_the_geo_data(database_url: str, tmp_path: Path) -> None:
    """With recording=journal a loader process enriches hits: serve and its further
    HTTP processes only append to the journal, and never hold the ~110 MB of geo data;
    a lookup (a hit committed directly when the journal cannot be written) loads it."""
    seen = _geo_in_runtimes(database_url, tmp_path, "journal")
    assert seen == {"at_start": False, "soon": False, "first_lookup": "GB", "after": True}


def test_a_process_that_commits_hits_loads_the_geo_data_at_start(
        database_url: str, tmp_path: Path) -> None:
    """recording=commit: the process enriches its own hits, so the data is loaded in the
    background at start rather than by (and in the time of) the first hit."""
    seen = _geo_in_runtimes(database_url, tmp_path, "commit")
    assert seen == {"at_start": seen["at_start"], "soon": True, "first_lookup": "GB",
                    "after": True}


def test_lookups_while_the_data_loads_wait_for_it() -> None:
    """Threads looking up at once, before anything is loaded, load it once and all find
    the place (the first lookups wait; none answers "unknown")."""
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "from mailbeacon.track.enrich import GeoLookup, geo_data_loaded\n"
            "geo = GeoLookup(preload=True)\n"
            "with ThreadPoolExecutor(8) as pool:\n"
            "    print(set(pool.map(lambda ip: geo.lookup(ip).country, ['81.2.69.142'] * 64)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.split() == ["{'GB'}"]
