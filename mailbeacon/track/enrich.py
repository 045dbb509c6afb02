"""What opened or clicked, and from where: client info from the user agent, place from the IP.

Both are lookups in data shipped inside PyPI packages, so nothing is downloaded at run time:
ua-parser's regexes (``ua-parser-builtins``) for the user agent, geoip2fast's bundled
GeoLite2-derived file for country and network owner (AS name). An operator may add a MaxMind
City database (``.mmdb``) for region, city and coordinates (DESIGN section 10).

    >>> info = client_info("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Thunderbird/115.5")
    >>> info.client_name, info.client_type, info.client_os, info.device_type
    ('Thunderbird', 'email client', 'Linux', 'desktop')
    >>> GeoLookup().lookup("81.2.69.142").country
    'GB'
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import maxminddb
import ua_parser

from mailbeacon.errors import ConfigError

log = logging.getLogger("mailbeacon.enrich")

UNKNOWN = "unknown"

# Mailgun's client-type vocabulary; "other" is part of it but nothing here produces it.
MOBILE_BROWSER = "mobile browser"
BROWSER = "browser"
EMAIL_CLIENT = "email client"
LIBRARY = "library"
ROBOT = "robot"

DESKTOP, MOBILE, TABLET = "desktop", "mobile", "tablet"

# Real user agents are under 500 characters; the cap bounds regex time on hostile input.
_MAX_PARSED_CHARS = 1024
_CACHED_CHARS = 512


@dataclass(frozen=True)
class ClientInfo:
    client_name: str  # "Apple Mail", "Gmail", "Outlook", "Chrome", ... or "unknown"
    client_type: str  # Mailgun's vocabulary: "browser", "email client", "library", ...
    client_os: str  # "iOS", "macOS", "Windows", "Android", "Linux", ... or "unknown"
    device_type: str  # "desktop" | "mobile" | "tablet" | "unknown"
    user_agent: str

    def to_json(self) -> dict[str, str]:
        """Mailgun's ``client-info`` object."""
        return {
            "client-name": self.client_name,
            "client-type": self.client_type,
            "client-os": self.client_os,
            "device-type": self.device_type,
            "user-agent": self.user_agent,
        }


class _Client(NamedTuple):
    pattern: re.Pattern[str]
    name: str  # "" takes the matched text as the name
    type: str
    os: str = ""  # used when the user agent names no OS
    device: str = ""  # used when the OS does not tell the device
    platform_is_real: bool = True  # False: the UA's OS is made up, report none


def _client(pattern: str, *rest: Any) -> _Client:
    return _Client(re.compile(pattern, re.IGNORECASE), *rest)


# Mail clients and fetchers the generic parser misses or misnames; first match wins.
_CLIENTS: tuple[_Client, ...] = (
    # Image proxies fetch for a person whose device we never see; Google's proxy claims to be
    # Firefox 11 on Windows XP. Named after the mailbox so "by client" reports read naturally.
    _client(r"GoogleImageProxy", "Gmail", EMAIL_CLIENT, UNKNOWN, UNKNOWN, False),
    _client(r"YahooMailProxy", "Yahoo Mail", EMAIL_CLIENT, UNKNOWN, UNKNOWN, False),
    # Only Outlook for Windows sends these tokens (Outlook for Mac sends a WebKit agent).
    _client(r"Microsoft Outlook|ms-office|MSOffice", "Outlook", EMAIL_CLIENT, "Windows", DESKTOP),
    _client(r"Outlook-iOS", "Outlook", EMAIL_CLIENT, "iOS", MOBILE),
    _client(r"Outlook-Android", "Outlook", EMAIL_CLIENT, "Android", MOBILE),
    _client(r"Thunderbird/", "Thunderbird", EMAIL_CLIENT, "", DESKTOP),
    # The Gmail app's in-app web view appends a Gmail token; GSA is the Google app, not Gmail.
    _client(r"\bGmail(/|$)", "Gmail", EMAIL_CLIENT),
    _client(r"\bGSA/", "Google App", MOBILE_BROWSER),
    _client(r"^(python-httpx|aiohttp|node-fetch|GuzzleHttp|undici)\b", "", LIBRARY),
)

# ua-parser families renamed or typed; type None means browser or mobile browser by device.
_FAMILIES: dict[str, tuple[str, str | None]] = {
    # WebKit with neither a Safari/ nor a Version/ token: the Mail app on macOS and on iOS.
    # Other iOS apps' bare web views look the same, but few of them load tracking pixels.
    "Apple Mail": ("Apple Mail", EMAIL_CLIENT),
    "Mobile Safari UI/WKWebView": ("Apple Mail", EMAIL_CLIENT),
    "Outlook": ("Outlook", EMAIL_CLIENT),
    "Outlook-iOS": ("Outlook", EMAIL_CLIENT),
    "Thunderbird": ("Thunderbird", EMAIL_CLIENT),
    "GmailImageProxy": ("Gmail", EMAIL_CLIENT),
    "YahooMailProxy": ("Yahoo Mail", EMAIL_CLIENT),
    "Chrome Mobile": ("Chrome", None),
    "Chrome Mobile iOS": ("Chrome", None),
    "Chrome Mobile WebView": ("Android WebView", None),
    "Mobile Safari": ("Safari", None),
    "Firefox Mobile": ("Firefox", None),
    "Firefox iOS": ("Firefox", None),
    "Edge Mobile": ("Edge", None),
    "Google": ("Google App", None),
    "curl": ("curl", LIBRARY),
    "Wget": ("Wget", LIBRARY),
    "Python Requests": ("python-requests", LIBRARY),
    "Python-urllib": ("Python-urllib", LIBRARY),
    "Go-http-client": ("Go-http-client", LIBRARY),
    "Java": ("Java", LIBRARY),
    "okhttp": ("okhttp", LIBRARY),
    "libwww-perl": ("libwww-perl", LIBRARY),
    "Apache-HttpClient": ("Apache-HttpClient", LIBRARY),
    "axios": ("axios", LIBRARY),
    "HeadlessChrome": ("HeadlessChrome", ROBOT),
    "PhantomJS": ("PhantomJS", ROBOT),
}

_OS_NAMES = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS", "Other": UNKNOWN}

# The device an OS implies when the parser names no tablet.
_OS_DEVICES = {
    "iOS": MOBILE, "Android": MOBILE, "Windows Phone": MOBILE, "BlackBerry OS": MOBILE,
    "KaiOS": MOBILE, "Windows": DESKTOP, "macOS": DESKTOP, "Linux": DESKTOP, "ChromeOS": DESKTOP,
    "Ubuntu": DESKTOP, "Fedora": DESKTOP, "Debian": DESKTOP, "FreeBSD": DESKTOP,
    "OpenBSD": DESKTOP,
}

_NOT_A_DEVICE = (LIBRARY, ROBOT)


def client_info(user_agent: str) -> ClientInfo:
    """Client name, type, OS and device of a user agent; cached, as parsing dominates a hit.

    Never raises: an empty or unrecognised agent gives "unknown" fields. Only agents of a
    real agent's length are cached: the cache holds 10,000 agents, and a client may send
    one of up to the 64 KiB a request head may have (600 MB held, were they cached).
    """
    if len(user_agent) <= _CACHED_CHARS:
        return _cached_client_info(user_agent)
    return _client_info(user_agent)


def _client_info(user_agent: str) -> ClientInfo:
    ua = user_agent.strip()[:_MAX_PARSED_CHARS]
    if not ua:
        return ClientInfo(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, user_agent)
    parsed = ua_parser.parse(ua)
    family = parsed.user_agent.family if parsed.user_agent else ""
    os_name = _OS_NAMES.get(parsed.os.family, parsed.os.family) if parsed.os else UNKNOWN
    device = _device_type(parsed.device, os_name)
    for client in _CLIENTS:
        if match := client.pattern.search(ua):
            if not client.platform_is_real:
                return ClientInfo(client.name, client.type, client.os, client.device, user_agent)
            if os_name == UNKNOWN and client.os:
                os_name = client.os
                device = _device_type(parsed.device, os_name)
            if device == UNKNOWN and client.device:
                device = client.device
            name = client.name or match.group(0)
            return ClientInfo(name, client.type, os_name, device, user_agent)
    spider = parsed.device is not None and parsed.device.family == "Spider"
    name, client_type = _FAMILIES.get(family, (family, None))
    if client_type is None:
        if spider:
            client_type = ROBOT
        elif not family or family == "Other":
            name, client_type = UNKNOWN, UNKNOWN
        else:
            client_type = MOBILE_BROWSER if device in (MOBILE, TABLET) else BROWSER
    if client_type in _NOT_A_DEVICE:
        device = UNKNOWN
    return ClientInfo(name, client_type, os_name, device, user_agent)


_cached_client_info = functools.lru_cache(maxsize=10_000)(_client_info)


def _device_type(device: ua_parser.Device | None, os_name: str) -> str:
    if device is not None:
        if device.family == "Spider":
            return UNKNOWN
        # ua-parser marks Android tablets by brand; iPads by family. (iPadOS 13+ Safari
        # claims to be a Mac and is counted as desktop: the agent cannot tell.)
        if "Tablet" in (device.brand or "") or device.family.startswith(("iPad", "Kindle")):
            return TABLET
    return _OS_DEVICES.get(os_name, UNKNOWN)


@dataclass(frozen=True)
class Geo:
    country: str = ""  # ISO 3166 alpha-2
    region: str = ""  # subdivision code (e.g. "CA"), only with a City database
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None  # the bundled data names networks but carries no AS numbers
    as_name: str = ""  # network owner, e.g. "APPLE-ENGINEERING", "GOOGLE"

    def to_json(self) -> dict[str, object]:
        """Mailgun's ``geolocation`` object, plus coordinates when known."""
        data: dict[str, object] = {
            "country": self.country, "region": self.region, "city": self.city,
        }
        if self.latitude is not None and self.longitude is not None:
            data["latitude"] = self.latitude
            data["longitude"] = self.longitude
        return data


NO_GEO = Geo()

# Country + AS name, IPv4 + IPv6: the bundled file with the most (about 110 MB resident).
_GEOIP2FAST_FILE = "geoip2fast-asn-ipv6.dat.gz"
_NO_AS_NAMES = frozenset({"", "<unknown>", "IANA.ORG"})
# Databases that locate nothing; a path to one is a configuration mistake.
_NOT_LOCATION_DBS = ("ASN", "ISP", "Anonymous-IP", "Connection-Type", "Domain")

_geoip2fast_lock = threading.Lock()
_geoip2fast: Any = None


def _shared_geoip2fast() -> Any:
    """The process-wide geoip2fast reader: it keeps its data in module globals, so one only."""
    global _geoip2fast
    with _geoip2fast_lock:
        if _geoip2fast is None:
            # Importing geoip2fast sets PYTHONWARNINGS=ignore and PYTHONIOENCODING in
            # os.environ, which our subprocesses would inherit; put them back.
            saved = {name: os.environ.get(name) for name in ("PYTHONWARNINGS", "PYTHONIOENCODING")}
            try:
                import geoip2fast
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            # A full path: given a bare name, geoip2fast prefers a file in the working directory.
            path = os.path.join(os.path.dirname(geoip2fast.__file__), _GEOIP2FAST_FILE)
            _geoip2fast = geoip2fast.GeoIP2Fast(geoip2fast_data_file=path)
        return _geoip2fast


def geo_data_loaded() -> bool:
    """Whether this process has loaded the bundled geo data (about 110 MB resident)."""
    return _geoip2fast is not None


class GeoLookup:
    """IP address -> country and network owner, plus region, city, coordinates from a City db.

    The bundled data (about 110 MB resident, 1 s to load) is loaded on the first lookup,
    so a process that never enriches a hit (an HTTP process that journals hits for a
    loader process) never holds it; `preload` loads it now, in a background thread, for a
    process that will enrich, so that its first hit does not wait. A City database is
    opened at once (memory-mapped: cheap), so that a wrong one is refused at start-up.
    `lookup` is thread-safe, cached, and never raises.
    """

    def __init__(self, city_db: str | None = None, *, cache_size: int = 16_384,
                 preload: bool = False) -> None:
        self._city = _open_city_db(city_db) if city_db else None
        self._fast: Any = None
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)
        if preload:
            threading.Thread(target=self._preload, name="geo-data", daemon=True).start()

    def load(self) -> None:
        """Load the bundled data now, if not yet; later lookups find it in place."""
        if self._fast is None:
            self._fast = _shared_geoip2fast()

    def _preload(self) -> None:
        try:
            self.load()
        except Exception:  # lookups try again, and give no place meanwhile
            log.exception("cannot load the bundled geo data")

    def lookup(self, ip: str) -> Geo:
        """Where `ip` is; an empty `Geo` for a malformed, private or unknown address."""
        try:
            return self._cached(ip)
        except Exception:  # a hit is recorded even when its place cannot be found
            return NO_GEO

    def _lookup(self, ip: str) -> Geo:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return NO_GEO
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return NO_GEO
        if self._fast is None:
            self.load()
        found = self._fast.lookup(str(address))
        country = found.country_code if _is_country_code(found.country_code) else ""
        as_name = "" if found.asn_name in _NO_AS_NAMES else str(found.asn_name)
        if as_name and not _contains(found.asn_cidr, address):
            # geoip2fast 1.2.2 with an IPv6-enabled file skips its range-end check for IPv4,
            # so an address in a gap gets the previous network's name (64.235.144.1 ->
            # INMARSAT-GOVERNMENT-1 in 64.235.112.0/20).
            as_name = ""
        if self._city is None:
            return Geo(country=country, as_name=as_name)
        record = self._city.get(address)
        if not isinstance(record, dict):
            return Geo(country=country, as_name=as_name)
        subdivisions = record.get("subdivisions")
        subdivision = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else {}
        return Geo(
            country=_text(record, "country", "iso_code")
            or _text(record, "registered_country", "iso_code")
            or country,
            region=_text(subdivision, "iso_code") or _text(subdivision, "names", "en"),
            city=_text(record, "city", "names", "en"),
            latitude=_number(record, "location", "latitude"),
            longitude=_number(record, "location", "longitude"),
            as_name=as_name,
        )


def _open_city_db(path: str) -> maxminddb.Reader:
    try:
        reader = maxminddb.open_database(path)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: InvalidDatabaseError
        raise ConfigError(f"cannot read the MaxMind City database {path!r}: {exc}") from exc
    kind = reader.metadata().database_type
    if any(word in kind for word in _NOT_LOCATION_DBS):
        reader.close()
        raise ConfigError(f"{path!r} is a {kind} database; a City database is needed")
    return reader


@functools.lru_cache(maxsize=4096)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def _contains(cidr: object, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    network = _network(cidr) if isinstance(cidr, str) else None
    return network is not None and address in network


def _is_country_code(code: object) -> bool:
    return isinstance(code, str) and len(code) == 2 and code.isalpha()


def _walk(record: object, keys: tuple[str, ...]) -> object:
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _text(record: object, *keys: str) -> str:
    value = _walk(record, keys)
    return value if isinstance(value, str) else ""


def _number(record: object, *keys: str) -> float | None:
    value = _walk(record, keys)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
