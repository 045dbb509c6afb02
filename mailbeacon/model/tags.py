"""Tag names: what a tag may be and its one spelling (messages, stats, suppressions)."""

from __future__ import annotations

from mailbeacon.errors import BadRequest

MAX_TAGS = 3  # per message, as Mailgun
MAX_TAG_LENGTH = 128


def check_tags(tags: list[str]) -> None:
    """Raise BadRequest naming the first tag that may not be stored."""
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"Too many tags: at most {MAX_TAGS} 'o:tag' values per message")
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH or not tag.isascii() or not tag.isprintable():
            raise BadRequest(
                f"Tag {tag!r} must be 1 to {MAX_TAG_LENGTH} printable ASCII characters")
        if "|" in tag or "/" in tag:  # "|" separates stored tags; "/" would break URLs
            raise BadRequest(f"Tag {tag!r} must not contain '|' or '/'")


def normalize_tags(tags: list[str]) -> list[str]:
    """Tags are case-insensitive: lowercased, duplicates dropped, order kept."""
    return list(dict.fromkeys(t.strip().lower() for t in tags if t.strip()))
