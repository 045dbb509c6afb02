"""`mailbeacon suppressions import|export`: CSV round trips and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailbeacon.cli import main
from mailbeacon.cli.suppressions import suppressions
from mailbeacon.storage.db import Database
from mailbeacon.suppress import lists as sl
from mailbeacon.suppress.rules import SuppressionKind

D1 = "Fri, 21 Oct 2011 11:02:55 GMT"
D1_US = 1319194975 * 1_000_000

# What each list gets in the source domain; tags, reasons and errors with commas and
# quotes, so the CSV quoting is exercised too.
SOURCE: dict[SuppressionKind, list[sl.Entry]] = {
    SuppressionKind.BOUNCE: [
        sl.Entry("a@example.org", code="552", error='Mailbox "full", try later',
                 created_at=D1_US),
        sl.Entry("b@example.org", code="550", error="", created_at=D1_US + 60_000_000)],
    SuppressionKind.UNSUBSCRIBE: [
        sl.Entry("a@example.org", scopes=("*", "list:weekly.example", "sale, spring"),
                 created_at=D1_US),
        sl.Entry("c@example.org", scopes=("promo",), created_at=D1_US)],
    SuppressionKind.COMPLAINT: [sl.Entry("d@example.org", created_at=D1_US),
                                sl.Entry("e@example.org", created_at=D1_US)],
    SuppressionKind.ALLOWLIST: [
        sl.Entry("partner.example", error="partner, trusted", created_at=D1_US),
        sl.Entry("vip@example.org", error="", created_at=D1_US)],
}


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(suppressions, [*args, "--database-url", database_url])


@pytest.fixture
def db(database_url: str) -> Database:
    for name in ("a.example.com", "b.example.com"):
        result = CliRunner().invoke(main, ["domains", "add", name,
                                           "--database-url", database_url])
        assert result.exit_code == 0, result.output
    return Database(database_url)


def listed(db: Database, domain: str, kind: SuppressionKind) -> list[sl.Entry]:
    return list(sl.iter_entries(db, domain, kind))


def test_export_import_round_trip(database_url: str, db: Database, tmp_path: Path) -> None:
    try:
        for kind, entries in SOURCE.items():
            sl.add_entries(db, "a.example.com", kind, entries)
        for name, kind in sl.LISTS.items():
            path = tmp_path / f"{name}.csv"
            result = run(database_url, "export", "A.example.com", name, str(path))
            assert result.exit_code == 0, result.output
            count = len(SOURCE[kind])
            assert f"exported {count} addresses from the {name} of a.example.com" \
                in result.output
            assert path.read_text().splitlines()[0] == ",".join(sl.CSV_COLUMNS[kind])
            result = run(database_url, "import", "b.example.com", name, str(path))
            assert result.exit_code == 0, result.output
            assert f"imported {count} addresses into the {name} of b.example.com" \
                in result.output
            assert listed(db, "b.example.com", kind) == SOURCE[kind]
            assert listed(db, "b.example.com", kind) == listed(db, "a.example.com", kind)
    finally:
        db.dispose()


def test_export_to_standard_output(database_url: str, db: Database) -> None:
    try:
        sl.add_entries(db, "a.example.com", SuppressionKind.BOUNCE,
                       SOURCE[SuppressionKind.BOUNCE])
        result = CliRunner().invoke(suppressions, ["export", "a.example.com", "bounces",
                                                   "--database-url", database_url])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "address,code,error,created_at",
            f'a@example.org,552,"Mailbox ""full"", try later","{D1}"',
            'b@example.org,550,,"Fri, 21 Oct 2011 11:03:55 GMT"',
        ]
        assert "exported 2 addresses" in result.stderr
        result = run(database_url, "export", "b.example.com", "complaints", "-")
        assert result.exit_code == 0 and result.stdout == "address,created_at\n"
    finally:
        db.dispose()


def test_bad_row_imports_nothing(database_url: str, db: Database, tmp_path: Path) -> None:
    path = tmp_path / "bounces.csv"
    path.write_text("address,code\nok@example.org,550\nnot-an-address,550\n")
    try:
        result = run(database_url, "import", "a.example.com", "bounces", str(path))
        assert result.exit_code == 1
        assert "line 3: 'address' parameter is not a valid address: 'not-an-address'" \
            in result.output
        assert str(path) in result.output and "nothing was imported" in result.output
        assert "Traceback" not in result.output
        assert listed(db, "a.example.com", SuppressionKind.BOUNCE) == []
    finally:
        db.dispose()


@pytest.mark.parametrize(("args", "words"), [
    (["import", "a.example.com", "bounces", "{tmp}/missing.csv"],
     "cannot read {tmp}/missing.csv: No such file or directory"),
    (["import", "a.example.com", "bounces", "{tmp}/empty.csv"], "the file is empty"),
    (["import", "a.example.com", "bounces", "{tmp}/latin1.csv"], "not UTF-8"),
    (["import", "a.example.com", "bounces", "{tmp}"], "cannot read"),
    (["import", "nope.example.com", "bounces", "{tmp}/empty.csv"],
     "Domain not found: nope.example.com"),
    (["import", "a.example.com", "spam", "{tmp}/empty.csv"],
     "unknown list 'spam': use one of bounces, unsubscribes, complaints, whitelists"),
    (["export", "nope.example.com", "bounces"], "Domain not found: nope.example.com"),
    (["export", "a.example.com", "spam"], "unknown list 'spam'"),
    (["export", "a.example.com", "bounces", "{tmp}/no/such/dir/out.csv"], "cannot write"),
    (["export", "a.example.com", "bounces", "{tmp}"], "cannot write {tmp}: Is a directory"),
])
def test_errors_are_clear(database_url: str, db: Database, tmp_path: Path, args: list[str],
                          words: str) -> None:
    db.dispose()
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "latin1.csv").write_bytes(b"address\n\xe9@example.org\n")
    result = run(database_url, *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 1, result.output
    assert words.format(tmp=tmp_path) in result.output
    assert "Traceback" not in result.output


def test_help_names_the_lists_and_the_database_option() -> None:
    result = CliRunner().invoke(suppressions, ["import", "--help"])
    assert result.exit_code == 0
    assert "--database-url" in result.output and "whitelists" in result.output
    result = CliRunner().invoke(suppressions, ["--help"])
    assert "import" in result.output and "export" in result.output
