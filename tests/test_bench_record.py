"""The benchmarks' record: rows with per-round ratios, merged per machine into the book's page on speed."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import record  # noqa: E402


def test_each_row_is_divided_by_the_row_it_names_round_by_round():
    times = {"ours": [1.0, 2.0, 4.0], "ours, 1-D": [0.5, 1.0, 1.0], "peer, 1-D": [2.0, 4.0, 9.0], "peer": [3.0, 6.0, 4.0]}
    rows = record.rows(times, {"peer": "a note"}, "ours", {"peer, 1-D": "ours, 1-D"})
    by_name = {row["name"]: row for row in rows}
    assert [row["name"] for row in rows] == list(times)
    assert by_name["ours, 1-D"]["ratio"] == pytest.approx(0.5) and by_name["ours, 1-D"]["against"] == "ours"
    assert by_name["peer, 1-D"]["ratio"] == pytest.approx(4.0) and by_name["peer, 1-D"]["against"] == "ours, 1-D"
    # the median of the per-round ratios (3, 3, 1), not the ratio of the medians (4 / 2)
    assert by_name["peer"]["ratio"] == pytest.approx(3.0)
    assert by_name["peer"]["median"] == 4.0 and by_name["peer"]["min"] == 3.0 and by_name["peer"]["note"] == "a note"


def test_durations_read_in_the_unit_that_fits():
    assert [record.duration(t) for t in (2.5, 0.0123, 4.2e-5)] == ["2.500 s", "12.30 ms", "42.0 µs"]


def test_a_run_replaces_its_own_tables_and_keeps_other_machines_and_tables(tmp_path, monkeypatch):
    results, page = tmp_path / "speed.json", tmp_path / "speed_tables.md"
    other = {"machine B": {"cpu": "B", "torch": "2.0", "tables": {"T": {"date": "2026-01-01", "rows": []}}}}
    results.write_text(json.dumps(other))
    row = record.rows({"x": [1.0], "y": [2.0]}, {}, "x")
    monkeypatch.setattr(record, "where", lambda: {"machine": "machine A", "cpu": "A", "torch": "2.13"})
    record.save({"T": row, "U": row}, results, page)
    record.save({"T": record.rows({"x": [1.0], "y": [3.0]}, {}, "x")}, results, page)
    saved = json.loads(results.read_text())
    assert saved["machine B"] == other["machine B"]
    assert list(saved["machine A"]["tables"]) == ["T", "U"]  # the first run's order stays
    assert saved["machine A"]["tables"]["T"]["rows"][1]["ratio"] == 3.0 and saved["machine A"]["tables"]["U"]["rows"] == row
    text = page.read_text()
    assert text.index("### A: machine A") < text.index("### B: machine B")
    assert "| y | 3.000 s | 3.000 s | 3.00 | x |  |" in text
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file and a rename


def test_the_book_s_speed_tables_are_those_of_its_record():
    # book/speed_tables.md is written from book/speed.json by `make bench`, never by hand
    assert record.TABLES.read_text() == record.markdown(json.loads(record.RESULTS.read_text()))
    assert "bart pics -l2" in record.TABLES.read_text()  # the committed record includes the peers, not only sigpy


def test_keep_prints_each_table_as_it_comes_and_collects_it(capsys):
    tables = {}
    record.keep(tables, "first", record.rows({"x": [1.0]}, {}, "x"))
    assert "first" in capsys.readouterr().out and list(tables) == ["first"]
