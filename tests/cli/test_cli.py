"""The command line: settings, keys, domains, migrate, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailbeacon.cli import main
from mailbeacon.domains.apikeys import KeyChecker
from mailbeacon.domains.domain import get_domain
from mailbeacon.errors import ConfigError
from mailbeacon.settings import SETTINGS, Settings, load
from mailbeacon.storage.db import Database

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_and_has_an_option() -> None:
    readme = (ROOT / "README.md").read_text()
    serve_help = CliRunner().invoke(main, ["serve", "--help"]).output
    for setting in SETTINGS:
        assert f"`{setting.env}`" in readme, f"{setting.env} missing from README"
        assert setting.option in serve_help
        assert setting.name in Settings.__dataclass_fields__


def test_settings_from_environment_and_options() -> None:
    env = {"MAILBEACON_HTTP": "0.0.0.0:9000", "MAILBEACON_DELIVERY_CONCURRENCY": "3",
           "MAILBEACON_RELAY": "smtp://127.0.0.1:1025"}
    settings = load({"relay": "smtp://127.0.0.1:2525"}, environ=env)
    assert settings.http_host_port == ("0.0.0.0", 9000)
    assert settings.delivery_concurrency == 3
    assert settings.relay == "smtp://127.0.0.1:2525"  # the option wins over the environment
    assert settings.base_url == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match="MAILBEACON_DELIVERY_CONCURRENCY"):
        load(environ={"MAILBEACON_DELIVERY_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load(environ={"MAILBEACON_HTTP": "8080"})
    with pytest.raises(ConfigError, match="16"):
        load(environ={"MAILBEACON_SECRET_KEY": "short"})


def test_keys_and_domains_commands(database_url: str) -> None:
    runner = CliRunner()
    env = {"MAILBEACON_DATABASE_URL": database_url}
    result = runner.invoke(main, ["keys", "create", "--description", "app"], env=env)
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    result = runner.invoke(main, ["domains", "add", "Mail.Example.com", "--tracking-url",
                                  "https://t.example.com"], env=env)
    assert result.exit_code == 0 and "added mail.example.com" in result.output
    result = runner.invoke(main, ["domains", "add", "mail.example.com"], env=env)
    assert result.exit_code == 1 and "already exists" in result.output
    for bad, words in (("https://-bad-.example.net", "label '-bad-'"),
                       ("https://t.example.com/path", "must not have a path")):
        result = runner.invoke(main, ["domains", "add", "other.example.com",
                                      "--tracking-url", bad], env=env)
        assert result.exit_code == 1 and words in result.output, result.output
    result = runner.invoke(main, ["domains", "list"], env=env)
    assert "mail.example.com" in result.output and "https://t.example.com" in result.output
    db = Database(database_url)
    try:
        assert KeyChecker(db).is_valid(key)
        assert not KeyChecker(db).is_valid(key + "x")
        assert get_domain(db, "mail.example.com").tracking_url == "https://t.example.com"
    finally:
        db.dispose()


def test_migrate_and_bad_database_urls(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'm.db'}"
    result = runner.invoke(main, ["migrate", "--database-url", url])
    assert result.exit_code == 0 and "up to date" in result.output
    for bad, words in (("mysql://x/y", "must be sqlite"),
                       (f"sqlite:///{tmp_path}/missing/dir/m.db", "does not exist"),
                       ("sqlite:///:memory:", "needs a file"),
                       ("postgresql+psycopg://nobody:secretpw@127.0.0.1:1/none",
                        "cannot open the database")):
        result = runner.invoke(main, ["migrate", "--database-url", bad])
        assert result.exit_code != 0, bad
        assert words in result.output, result.output
        assert "Traceback" not in result.output
        assert "secretpw" not in result.output


def test_serve_rejects_bad_settings_with_a_message() -> None:
    result = CliRunner().invoke(main, ["serve", "--http", "nonsense"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    result = CliRunner().invoke(main, ["serve", "--relay", "http://x"])
    assert result.exit_code == 2 and "relay must be" in result.output


def test_settings_survive_the_environment_handed_to_child_processes() -> None:
    settings = Settings(http="127.0.0.1:9999", http_processes=3, recording="journal",
                        webhook_forbid_private=True, api_key="key-0123456789abcdef",
                        retry_first=12.5)
    env = settings.environment()
    assert env["MAILBEACON_WEBHOOK_FORBID_PRIVATE"] == "yes"
    assert load(environ=env) == settings


NUMERIC = [s for s in SETTINGS if s.type in (int, float)]


def test_every_numeric_setting_has_a_documented_range() -> None:
    readme = (ROOT / "README.md").read_text()
    serve_help = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    for setting in NUMERIC:
        assert setting.low is not None and setting.high is not None, setting.name
        assert setting.low <= setting.default <= setting.high, setting.name
        assert f"| `{setting.env}` | {setting.range} |" in readme, setting.env
        assert f"[range: {setting.range}]" in serve_help, setting.option


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_numbers_out_of_range_are_refused_naming_the_setting(setting: Any) -> None:
    """inf, nan, negative and too-large values stop serve with a message, no traceback
    (MAILBEACON_RETRY_FIRST=inf re-sent delivered mail; -1 timeouts were taken)."""
    assert setting.low is not None and setting.high is not None
    bad = ["-5", str(setting.low - 1), str(setting.high * 2)]
    if setting.type is float:
        bad += ["inf", "-inf", "nan"]
    for value in bad:
        with pytest.raises(ConfigError, match=setting.env):
            load(environ={setting.env: value})
        result = CliRunner().invoke(main, ["serve"], env={setting.env: value})
        assert result.exit_code == 2, (setting.env, value, result.output)
        assert setting.env in result.output and "Traceback" not in result.output
    for value in (setting.low, setting.high):  # the ends are in the range
        assert getattr(load(environ={setting.env: str(value)}), setting.name) == value
