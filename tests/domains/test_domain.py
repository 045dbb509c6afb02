"""The Domain record: every setting, privacy and bot thresholds included, read in one
place and changed through `update_domain`, on both backends."""

from __future__ import annotations

import logging

import pytest

from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains


def test_privacy_and_bot_settings_are_on_the_record(db: Database) -> None:
    added = dom.add_domain(db, "example.com")
    assert (added.track_activities, added.truncate_ips, added.retention_days) == (
        "always", False, 30)
    assert added.bot_thresholds == dom.Thresholds()
    strict = dom.Thresholds(click_after_delivery_seconds=10, burst_links=2, burst_seconds=0.5)
    changed = dom.update_domain(db, "Example.COM", track_activities="never", truncate_ips=True,
                                retention_days=1, bot_thresholds=strict)
    assert (changed.track_activities, changed.truncate_ips, changed.retention_days) == (
        "never", True, 1)
    assert changed.bot_thresholds == strict
    assert dom.get_domain(db, "example.com") == changed  # what was written is read back
    assert dom.privacy_json(changed) == {"track_activities": "never", "truncate_ips": True,
                                         "retention_days": 1}
    assert dom.update_domain(db, "example.com") == changed  # nothing to change
    with pytest.raises(NotFound):
        dom.update_domain(db, "nowhere.example", retention_days=5)
    with pytest.raises(ValueError, match="unknown domain settings"):
        dom.update_domain(db, "example.com", colour="blue")


def test_unusable_stored_thresholds_read_as_the_defaults(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    dom.add_domain(db, "example.com")
    for raw in ('{"burst_links": 1}', '{"colour": 3}', "[1, 2]", "{not json"):
        with db.write() as conn:
            conn.execute(domains.update().values(bot_thresholds=raw))
        with caplog.at_level(logging.WARNING, "mailbeacon.domains"):
            assert dom.get_domain(db, "example.com").bot_thresholds == dom.Thresholds()
        assert "unusable bot_thresholds" in caplog.text
        caplog.clear()


def test_privacy_form_values_are_checked() -> None:
    assert dom.parse_privacy(" CONSENT ", "no", " 365 ") == {
        "track_activities": "consent", "truncate_ips": False, "retention_days": 365}
    assert dom.parse_privacy() == {}
    for args in (("x", None, None), (None, "perhaps", None), (None, None, "1.5"),
                 (None, None, "0"), (None, None, "3651"), (None, None, "99999999999"),
                 (None, None, "١٢")):  # Arabic-Indic digits: isdigit() but not ASCII
        with pytest.raises(BadRequest):
            dom.parse_privacy(*args)
