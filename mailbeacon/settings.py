"""Settings, declared once: name, type, default, help.

Each setting is read from the command line (`--http`), else the environment
(`MAILBEACON_HTTP`), else its default, into one frozen `Settings` object at start-up.
tests/cli/test_cli.py checks that every setting is documented in README.md (Configuration).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mailbeacon.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    # Numbers: the range a value must be in (both ends included), checked at start-up.
    low: float | None = None
    high: float | None = None

    @property
    def env(self) -> str:
        return "MAILBEACON_" + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def secret(self) -> bool:
        return any(word in self.name for word in ("key", "password", "mailbox"))

    @property
    def range(self) -> str:
        """The documented range, e.g. "1 to 64" (README and --help say it)."""
        return f"{_number(self.low)} to {_number(self.high)}"


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", str, "sqlite:///mailbeacon.db",
            "SQLAlchemy URL: sqlite:///FILE (default, in the working directory) or "
            "postgresql+psycopg://USER@HOST/DB."),
    Setting("http", str, "127.0.0.1:8080",
            "HOST:PORT the HTTP server (API and tracking endpoints) listens on."),
    Setting("http_processes", int, 1,
            "Processes answering HTTP on --http (Linux SO_REUSEPORT: the kernel spreads "
            "connections over them). Each serves the API and the tracking endpoints; the "
            "first also runs the delivery worker, webhooks, SMTP and the journal loader. "
            "Use one per core for tracking bursts (see docs/benchmarks.md).", low=1, high=64),
    Setting("http_max_connections", int, 1000,
            "Open HTTP connections at once per process. Past it a new connection takes the "
            "place of the one waiting longest for a request (idle keep-alive or unfinished "
            "head); when every one is busy, it gets 503 (see docs/security.md).",
            low=16, high=100_000),
    Setting("public_url", str, "",
            "Base URL recipients reach this server at, used in tracking links when a domain "
            "has no tracking URL of its own, and in the API's paging URLs. Default: "
            "http://HOST:PORT of --http."),
    Setting("relay", str, "",
            "Upstream SMTP relay: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), "
            "smtps://... (TLS from the start), or smtp+plain://... (never TLS). Empty: "
            "delivered mail is kept in the local outbox, shown in the dashboard."),
    Setting("smtp", str, "",
            "HOST:PORT of the SMTP server: submission (AUTH with user 'api' and an API key) "
            "and mail returning to the bounce domains. Empty: no SMTP server."),
    Setting("smtp_max_bytes", int, 25 * 1024 * 1024,
            "Largest message the SMTP server takes (552 above it).", low=1024, high=2**30),
    Setting("smtp_sessions_per_ip", int, 10,
            "Unauthenticated SMTP sessions open at once per client address (an IPv6 "
            "address counts by its /64); the one over the limit gets 421. A session stops "
            "counting once it authenticates.", low=1, high=10000),
    Setting("smtp_tls_cert", str, "",
            "PEM certificate (chain) for STARTTLS on the SMTP server; AUTH then needs TLS."),
    Setting("smtp_tls_key", str, "", "PEM private key of --smtp-tls-cert."),
    Setting("bounce_mailbox", str, "",
            "Mailbox to fetch bounces and complaints from: pop3s://USER:PASS@HOST[:PORT], "
            "pop3://, imaps://USER:PASS@HOST[:PORT][/FOLDER] or imap://. Empty: none."),
    Setting("bounce_mailbox_interval", float, 60.0,
            "Seconds between two mailbox polls.",
            low=1, high=86400),
    Setting("secret_key", str, "",
            "Key that signs tracking tokens (at least 16 characters). Empty: one is generated "
            "once and kept in the database, so links stay valid across restarts."),
    Setting("old_secret_keys", str, "",
            "Comma-separated former secret keys: tokens they signed still verify."),
    Setting("api_key", str, "",
            "An API key accepted besides those made with `mailbeacon keys create`."),
    Setting("metrics_key", str, "",
            "Bearer token that /metrics asks for (Prometheus' text format). Empty: "
            "/metrics answers 404."),
    Setting("max_request_bytes", int, 25 * 1024 * 1024,
            "Largest HTTP request body accepted (413 above it); Mailgun's limit is 25 MB.",
            low=1024, high=2**30),
    Setting("relay_timeout", float, 30.0,
            "Seconds before an SMTP relay operation times out.",
            low=1, high=3600),
    Setting("delivery_concurrency", int, 10,
            "SMTP transactions in flight at once per process.",
            low=1, high=1000),
    Setting("retry_first", float, 600.0,
            "Seconds before the first retry of a temporary failure; each next retry waits "
            "twice as long.", low=1, high=86400),
    Setting("retry_max_age", float, 28800.0,
            "Seconds after the first attempt when temporary failures become permanent.",
            low=0, high=2592000),
    Setting("recording", str, "commit",
            "commit: an open or click is answered once it is in the database. journal: "
            "once it is appended to a local journal (spool_dir) that is loaded into the "
            "database in large batches: several times the throughput, events appear a "
            "moment later; as durable against a process crash."),
    Setting("spool_dir", str, "mailbeacon-spool",
            "Folder where opens and clicks wait while the database is unreachable; they "
            "are written to the database when it is back."),
    Setting("geoip_db", str, "",
            "Path to a MaxMind GeoIP2/GeoLite2 City .mmdb file, for region, city and "
            "coordinates. Without it, countries and networks come from the data shipped "
            "with geoip2fast."),
    Setting("engagement_half_life_days", float, 30.0,
            "Days after which an open, click or reply counts half in a contact's "
            "engagement score.", low=0.1, high=3650),
    Setting("webhook_timeout", float, 5.0,
            "Seconds a webhook post may take in all (resolving, connecting, sending, "
            "reading the answer); a slower one is retried later.",
            low=0.1, high=300),
    Setting("webhook_forbid_private", bool, False,
            "yes: refuse webhook URLs whose host resolves to a private, loopback or "
            "link-local address (SSRF protection for multi-tenant installations)."),
    Setting("log_level", str, "info", "debug, info, warning or error."),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///mailbeacon.db"
    http: str = "127.0.0.1:8080"
    http_processes: int = 1
    http_max_connections: int = 1000
    public_url: str = ""
    relay: str = ""
    smtp: str = ""
    smtp_max_bytes: int = 25 * 1024 * 1024
    smtp_sessions_per_ip: int = 10
    smtp_tls_cert: str = ""
    smtp_tls_key: str = ""
    bounce_mailbox: str = ""
    bounce_mailbox_interval: float = 60.0
    secret_key: str = ""
    old_secret_keys: str = ""
    api_key: str = ""
    metrics_key: str = ""
    max_request_bytes: int = 25 * 1024 * 1024
    relay_timeout: float = 30.0
    delivery_concurrency: int = 10
    retry_first: float = 600.0
    retry_max_age: float = 28800.0
    recording: str = "commit"
    spool_dir: str = "mailbeacon-spool"
    geoip_db: str = ""
    engagement_half_life_days: float = 30.0
    webhook_timeout: float = 5.0
    webhook_forbid_private: bool = False
    log_level: str = "info"

    @property
    def http_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.http, "http")

    @property
    def base_url(self) -> str:
        """Where recipients reach us when a domain has no tracking URL of its own."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.http_host_port
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def environment(self) -> dict[str, str]:
        """Every setting as its MAILBEACON_* variable: how serve hands its settings to the
        processes it starts (never on their command lines, visible to every local user)."""
        env = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            env[s.env] = ("yes" if value else "no") if s.type is bool else str(value)
        return env


def parse_host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def load(overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from overrides (non-None values win), else the environment, else defaults."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = overrides.get(s.name)
        if raw is None:
            raw = environ.get(s.env)
        if raw is None:
            continue
        try:
            values[s.name] = _flag(raw) if s.type is bool else s.type(raw)
        except (TypeError, ValueError) as exc:
            kind = "yes or no" if s.type is bool else f"a {s.type.__name__}"
            raise ConfigError(f"{s.env} must be {kind}, got {raw!r}") from exc
    settings = Settings(**values)
    validate(settings)
    return settings


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"not yes or no: {raw!r}")


def validate(settings: Settings) -> None:
    for s in SETTINGS:
        if s.low is not None and s.high is not None:
            _in_range(s, getattr(settings, s.name))
    settings.http_host_port  # noqa: B018 - raises ConfigError when malformed
    if settings.smtp:
        parse_host_port(settings.smtp, "smtp")
    if settings.relay:  # before the port is bound, so a bad URL is named first
        from mailbeacon.send.relay import Relay

        Relay.from_url(settings.relay)  # ConfigError, never quoting the URL
    if settings.bounce_mailbox:
        from mailbeacon.inbound.mailbox import MailboxConfig

        MailboxConfig.from_url(settings.bounce_mailbox)  # ConfigError, never quoting the URL
    if bool(settings.smtp_tls_cert) != bool(settings.smtp_tls_key):
        raise ConfigError("MAILBEACON_SMTP_TLS_CERT and MAILBEACON_SMTP_TLS_KEY go together")
    if settings.secret_key and len(settings.secret_key) < 16:
        raise ConfigError("MAILBEACON_SECRET_KEY must be at least 16 characters")
    if any(len(k.strip()) < 16 for k in settings.old_secret_keys.split(",") if k.strip()):
        raise ConfigError("each of MAILBEACON_OLD_SECRET_KEYS must be at least 16 characters")
    if settings.public_url and urlsplit(settings.public_url).scheme not in ("http", "https"):
        raise ConfigError("MAILBEACON_PUBLIC_URL must start with http:// or https://")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("MAILBEACON_LOG_LEVEL must be debug, info, warning or error")
    if settings.recording not in ("commit", "journal"):
        raise ConfigError("MAILBEACON_RECORDING must be commit or journal")
    if settings.geoip_db and not os.path.isfile(settings.geoip_db):
        raise ConfigError(f"MAILBEACON_GEOIP_DB: no such file: {settings.geoip_db}")


def _in_range(setting: Setting, value: float) -> None:
    """A number outside its range (inf and nan included) is refused, naming the setting:
    retry_first=inf re-sent delivered mail, a negative timeout or concurrency broke the
    loops that use them."""
    assert setting.low is not None and setting.high is not None
    if not (math.isfinite(value) and setting.low <= value <= setting.high):
        raise ConfigError(f"{setting.env} must be between {_number(setting.low)} and "
                          f"{_number(setting.high)}, got {value}")
