"""All tables, in one SQLAlchemy Core MetaData (DESIGN section 2).

Times are integer microseconds since the epoch (exact comparisons and keyset paging);
JSON is stored as text so SQLite and PostgreSQL hold the same bytes: `JSONText` columns
(storage/types.py) encode and decode it; the JSON columns still typed `Text` are
written or parsed by code that does so by hand, each marked "JSON text" below.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)

from mailbeacon.storage.types import JSONText

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# mailbeacon.model.ids: time-ordered, random tail. Byte order on PostgreSQL whatever the
# database collation, because keyset paging relies on it.
ID = String(26).with_variant(String(26, collation="C"), "postgresql")

# One row per installation-wide value, e.g. the generated token secret.
installation = Table(
    "installation",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("description", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    # The first characters of the key, shown in lists to tell keys apart ("" for keys
    # made before prefixes were kept).
    Column("prefix", String(16), nullable=False, server_default=""),
    Column("domain", String(253)),  # NULL: every domain; else the one domain it may use
    Column("role", String(8), nullable=False, server_default="full"),  # full | send
    Column("revoked_at", BigInteger),
    Column("last_used_at", BigInteger),  # written at most once a minute per process
)

domains = Table(
    "domains",
    metadata,
    Column("name", String(253), primary_key=True),
    Column("id", ID, nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("track_opens", Boolean, nullable=False, default=True),
    Column("track_clicks", String(8), nullable=False, default="yes"),  # yes | no | htmlonly
    Column("pixel_top", Boolean, nullable=False, default=False),
    Column("tracking_url", Text, nullable=True),  # None: the server's public URL
    Column("bounce_domain", String(253), nullable=True),  # VERP domain; None: the domain
    Column("dkim_selector", String(63), nullable=True),
    Column("dkim_private_key", Text, nullable=True),  # PEM; never shown by the API
    Column("unsubscribe_footer", Boolean, nullable=False, server_default="0"),
    Column("footer_html", Text, nullable=True),  # None: the built-in template
    Column("footer_text", Text, nullable=True),
    Column("soft_bounce_limit", Integer, nullable=False, server_default="5"),
    Column("webhook_signing_key", String(128), nullable=True),  # made on first use
    # Privacy (DESIGN 12): always | consent | never; IP truncation; raw event retention.
    Column("track_activities", String(8), nullable=False, server_default="always"),
    Column("truncate_ips", Boolean, nullable=False, server_default="0"),
    Column("retention_days", Integer, nullable=False, server_default="30"),
    # JSON text, see domains/domain.Thresholds: read through the Domain record, and
    # parsed by hand in track/hits.py (JSONText once that reads the record).
    Column("bot_thresholds", Text, nullable=True),
    # List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) on every message; off: only
    # on messages with a footer or an unsubscribe placeholder.
    Column("list_unsubscribe", Boolean, nullable=False, server_default="1"),
    Column("web_scheme", String(5), nullable=True),  # http | https; None: as the URL says
)

messages = Table(
    "messages",
    metadata,
    Column("id", ID, primary_key=True),
    Column("domain", String(253), ForeignKey("domains.name"), nullable=False),
    Column("message_id", String(255), nullable=False),  # RFC 5322 Message-ID, no <>
    Column("created_at", BigInteger, nullable=False),
    Column("sender", Text, nullable=False),  # envelope sender address
    # JSON text, encoded by send/intake.py and decoded where read (send/worker.py,
    # events/vocabulary.py, insight/contacts.py, dashboard/messages.py, which also
    # matches a tag inside `tags` with LIKE): JSONText once intake and worker move.
    Column("headers", Text, nullable=False),  # JSON: from, to, subject, message-id
    Column("tags", Text, nullable=False),  # JSON list, lowercased
    Column("user_variables", Text, nullable=False),  # JSON object
    Column("options", Text, nullable=False),  # JSON: tracking options of this message
    Column("recipient_variables", Text, nullable=True),  # JSON: address -> {name: value}
    Column("testmode", Boolean, nullable=False, server_default="0"),
    Column("mime", LargeBinary, nullable=False),  # as submitted, before tracking
)
Index("ix_messages_domain_message_id", messages.c.domain, messages.c.message_id)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", ID, primary_key=True),  # goes into tracking tokens
    Column("message_id", ID, ForeignKey("messages.id"), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("status", String(16), nullable=False),  # queued|sending|delivered|failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=True),  # claim expiry while sending
    Column("last_code", Integer, nullable=True),
    Column("last_message", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Column("first_attempt_at", BigInteger, nullable=True),  # retries stop 8 h after it
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)
Index("ix_deliveries_message", deliveries.c.message_id)
# Contacts, erasure and a recipient's messages look deliveries up by address.
Index("ix_deliveries_recipient_lower", func.lower(deliveries.c.recipient))

events = Table(
    "events",
    metadata,
    Column("id", ID, primary_key=True),  # allocated at commit: commit order = id order
    Column("domain", String(253), nullable=False),
    Column("ts", BigInteger, nullable=False),  # when it happened
    Column("event", String(24), nullable=False),
    Column("recipient", Text, nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("delivery_id", ID, nullable=True),
    Column("severity", String(16), nullable=True),
    Column("tags", Text, nullable=False, default=""),  # "|a|b|" for exact LIKE matches
    # The event JSON as served, as text: the event writer (storage/db.insert_events)
    # encodes it once, and a page of events could be spliced from these texts verbatim.
    Column("data", Text, nullable=False),
)
Index("ix_events_domain_id", events.c.domain, events.c.id)
Index("ix_events_domain_recipient", events.c.domain, events.c.recipient, events.c.id)
Index("ix_events_domain_message", events.c.domain, events.c.message_id, events.c.id)
Index("ix_events_domain_event", events.c.domain, events.c.event, events.c.id)

# One row per tag of an event, written with the event (db.insert_events): its primary key
# serves the Events API's tag filter in id order. Deleted with its event (cascade, which
# looks rows up by event_id). No index leads with event_id and holds the tag: a planner
# could walk it from the cursor instead and scan every event's tags.
event_tags = Table(
    "event_tags",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("tag", String(128), primary_key=True),  # lowercased, as in events.tags
    Column("event_id", ID, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
)
Index("ix_event_tags_event_id", event_tags.c.event_id)

# Message x recipient engagement; powers unique counts and status indicators.
recipient_state = Table(
    "recipient_state",
    metadata,
    Column("delivery_id", ID, primary_key=True),
    Column("domain", String(253), nullable=False),
    Column("first_open_at", BigInteger, nullable=True),
    Column("last_open_at", BigInteger, nullable=True),
    Column("open_count", Integer, nullable=False, default=0),
    Column("first_click_at", BigInteger, nullable=True),
    Column("last_click_at", BigInteger, nullable=True),
    Column("click_count", Integer, nullable=False, default=0),
    # The same for hits judged human (track/bots.py), for human-only unique counts.
    Column("human_open_count", Integer, nullable=False, server_default="0"),
    Column("human_click_count", Integer, nullable=False, server_default="0"),
    Column("first_human_open_at", BigInteger, nullable=True),
    Column("first_human_click_at", BigInteger, nullable=True),
    Column("recipient", String(320), nullable=True),  # lowercased, for status by address
    Column("bounced", Boolean, nullable=False, server_default="0"),
)

# Hourly counters per domain x tag ("" = all messages) x event kind.
stats_buckets = Table(
    "stats_buckets",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("event", String(24), primary_key=True),
    Column("hour", BigInteger, primary_key=True),  # epoch seconds, start of the hour
    Column("count", BigInteger, nullable=False),
    Column("human_count", BigInteger, nullable=False, server_default="0"),
)

# Addresses not to send to: bounce | unsubscribe | complaint, and the allowlist.
# `tag` is the unsubscribe scope: "*" (whole domain), a tag, or "list:<address>"; "" for
# the other kinds. An allowlist `address` may also be a bare domain ("example.org").
suppressions = Table(
    "suppressions",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("address", String(320), primary_key=True),  # lowercased
    Column("tag", String(330), primary_key=True),
    Column("code", String(8), nullable=False, server_default=""),
    Column("error", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_suppressions_address", suppressions.c.domain, suppressions.c.address)

# Soft bounces per address, counted toward the domain's soft-bounce limit.
soft_bounces = Table(
    "soft_bounces",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last_at", BigInteger, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("tag", String(128), primary_key=True),  # lowercased
    Column("description", Text, nullable=False, server_default=""),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
)

# Every message that came back to a bounce domain (SMTP or mailbox), kept for inspection:
# what it was, what it matched, and what went wrong if anything did.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", ID, primary_key=True),
    Column("received_at", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),  # smtp | mailbox
    Column("mail_from", Text, nullable=False, server_default=""),
    Column("recipients", JSONText, nullable=False, server_default="[]"),  # a list
    # The bounce domain it was addressed to: whose reports these are (unmatched ones too).
    Column("host", String(253), nullable=False, server_default=""),
    Column("sha256", String(64), nullable=False, unique=True),  # a re-polled copy is skipped
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # processed | ignored | unmatched | error
    Column("kind", String(16), nullable=False, server_default=""),
    # Results and matches; "" (old rows) reads as None.
    Column("detail", JSONText, nullable=False, server_default=""),
)
Index("ix_inbound_messages_received", inbound_messages.c.received_at)
Index("ix_inbound_messages_host", inbound_messages.c.host, inbound_messages.c.status,
      inbound_messages.c.received_at)

# Customer endpoints per domain and webhook id (Mailgun's names: accepted, delivered,
# opened, clicked, unsubscribed, complained, permanent_fail, temporary_fail, and our
# first_opened), at most 3 URLs each.
webhooks = Table(
    "webhooks",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("webhook", String(24), primary_key=True),
    Column("url", String(2048), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

# The outbox: one row per event x subscribed URL, written in the event's transaction.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("domain", String(253), nullable=False),
    Column("webhook", String(24), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("event_id", ID, nullable=False),
    Column("payload", JSONText, nullable=False),  # the event JSON ("event-data")
    Column("status", String(16), nullable=False),  # pending|sending|done|rejected|failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=True),
    Column("last_code", Integer, nullable=True),  # HTTP status; None: no answer
    Column("last_error", Text, nullable=True),
    Column("last_attempt_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_webhook_deliveries_due", webhook_deliveries.c.status,
      webhook_deliveries.c.next_attempt_at)
Index("ix_webhook_deliveries_domain", webhook_deliveries.c.domain, webhook_deliveries.c.id)

# Daily counters of hits by one dimension (country, device, os, client, provider), per
# domain x tag ("" = all) x event, for aggregates and campaign breakdowns.
dimension_stats = Table(
    "dimension_stats",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("event", String(24), primary_key=True),
    Column("dimension", String(16), primary_key=True),
    Column("value", String(128), primary_key=True),
    Column("day", BigInteger, primary_key=True),  # epoch seconds, start of the UTC day
    Column("count", BigInteger, nullable=False),
    Column("human_count", BigInteger, nullable=False, server_default="0"),
)

# Clicks per link per campaign: total and unique (first click of a recipient on it).
link_stats = Table(
    "link_stats",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("url", String(2048), primary_key=True),
    Column("clicks", BigInteger, nullable=False),
    Column("unique_clicks", BigInteger, nullable=False),
    Column("human_clicks", BigInteger, nullable=False, server_default="0"),
)

# Which links each recipient clicked (for unique clicks per link).
link_clicks = Table(
    "link_clicks",
    metadata,
    Column("delivery_id", ID, primary_key=True),
    Column("link_index", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
)

# One row per address a domain has sent to: consent and engagement score. The score
# decays with a half-life; `score` is its value at `score_at`, and `score_rank` =
# log2(score) + score_at / half-life orders contacts by their score now, whatever now is.
contacts = Table(
    "contacts",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("address", String(320), primary_key=True),  # lowercased
    Column("consent", Boolean, nullable=True),  # None: not asked
    Column("consent_at", BigInteger, nullable=True),
    Column("score", Float, nullable=False, server_default="0"),
    Column("score_at", BigInteger, nullable=False, server_default="0"),
    Column("score_rank", Float, nullable=False, server_default="-1e300"),
    Column("opens", Integer, nullable=False, server_default="0"),
    Column("clicks", Integer, nullable=False, server_default="0"),
    Column("replies", Integer, nullable=False, server_default="0"),
    Column("last_activity_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_contacts_rank", contacts.c.domain, contacts.c.score_rank)
Index("ix_recipient_state_recipient", recipient_state.c.domain, recipient_state.c.recipient)

# Without a relay (the embedded default), "delivered" mail lands here, so a newcomer can
# read it in the dashboard, load its pixel and follow its links.
local_outbox = Table(
    "local_outbox",
    metadata,
    Column("id", ID, primary_key=True),
    Column("domain", String(253), nullable=False),
    Column("delivery_id", ID, nullable=False),
    Column("sender", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_local_outbox_domain", local_outbox.c.domain, local_outbox.c.id)

# Dashboard users (`mailbeacon users create`).
users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),  # scrypt, with its parameters and salt
    Column("created_at", BigInteger, nullable=False),
    Column("last_login_at", BigInteger, nullable=True),
)
