"""The `bounces parse` command: JSON lines per result, unreadable files named on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbeacon.cli.bounces import bounces
from tests.inbound.test_parser import ARF_REDACTED, DSN_TWO_RECIPIENTS

KEYS = ["file", "kind", "recipient", "status", "reply_code", "hard", "category", "reason",
        "feedback_type", "diagnostic", "remote_mta", "permanent"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"dsn": tmp_path / "dsn.eml", "arf": tmp_path / "arf.eml",
             "plain": tmp_path / "plain.eml"}
    paths["dsn"].write_bytes(DSN_TWO_RECIPIENTS)
    paths["arf"].write_bytes(ARF_REDACTED)
    paths["plain"].write_bytes(b"Subject: hello\n\nJust a note.\n")
    return paths


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_one_json_line_per_result(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        bounces, ["parse", str(files["dsn"]), str(files["arf"]), str(files["plain"])])
    assert result.exit_code == 0, result.output
    rows = lines(result.stdout)
    assert [list(row) for row in rows] == [KEYS] * 4
    assert [(row["file"], row["kind"], row["recipient"]) for row in rows] == [
        (str(files["dsn"]), "bounce", "ann@example.org"),
        (str(files["dsn"]), "bounce", "bob@example.org"),
        (str(files["arf"]), "complaint", "erin@example.org"),
        (str(files["plain"]), "not-a-report", ""),
    ]
    assert rows[0]["hard"] is True and rows[0]["category"] == "hard"
    assert rows[1]["category"] == "soft" and rows[1]["permanent"] is False
    assert rows[2]["feedback_type"] == "abuse" and rows[2]["category"] is None


def test_unreadable_file_is_named_and_the_rest_still_parsed(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "arf.eml":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = CliRunner().invoke(bounces, ["parse", str(files["arf"]), str(files["dsn"])])
    assert result.exit_code == 1
    assert f"cannot read {files['arf']}: Permission denied" in result.stderr
    assert [row["recipient"] for row in lines(result.stdout)] == [
        "ann@example.org", "bob@example.org"]


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(bounces, ["parse", str(tmp_path / "nope.eml")])
    assert result.exit_code == 2
    assert "nope.eml" in result.stderr


def test_a_file_argument_is_required() -> None:
    assert CliRunner().invoke(bounces, ["parse"]).exit_code == 2


def test_binary_junk_is_not_a_report(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 64)
    result = CliRunner().invoke(bounces, ["parse", str(junk)])
    assert result.exit_code == 0
    assert [row["kind"] for row in lines(result.stdout)] == ["not-a-report"]
