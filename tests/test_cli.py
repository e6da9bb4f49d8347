"""The command line: subcommands, exit codes, one-line errors, output formats."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from lcdb.cli import main


def test_help_of_every_command(capsys):
    assert main(["--help"]) == 0
    for cmd in ("init", "info", "ingest", "refcat", "sql", "lightcurve", "compact"):
        assert main([cmd, "--help"]) == 0
    assert "ingest" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["init", str(tmp_path / "s"), "--order", "40"]) == 2
    assert "order must be" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "s")]) == 0
    assert main(["lightcurve", "--store", str(tmp_path / "s"), "--ra", "1"]) == 2
    assert main(["lightcurve", "--store", str(tmp_path / "s"), "--object", "1", "--ra", "1"]) == 2


def test_errors_are_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LCDB_STORE", raising=False)
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LCDB_STORE" in err[0]
    assert main(["info", "--store", str(tmp_path)]) == 1
    assert "not an lcdb store" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "s")]) == 0
    assert main(["sql", "--store", str(tmp_path / "s"), "DROP VIEW frames"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_init_ingest_sql_lightcurve_compact(tmp_path, frames_dir, capsys, monkeypatch):
    store = str(tmp_path / "s")
    assert main(["init", store, "--order", "6"]) == 0
    monkeypatch.setenv("LCDB_STORE", store)
    assert main(["ingest", str(frames_dir), "--no-progress"]) == 0
    assert "ingested 10 frame(s), 4000 measurement(s)" in capsys.readouterr().err
    # Re-ingest: skipped, still success.
    assert main(["ingest", str(frames_dir), "--no-progress"]) == 0
    assert "skipped 10" in capsys.readouterr().err
    assert main(["sql", "SELECT count(*) AS n FROM measurements", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4000}]
    out = tmp_path / "m.parquet"
    assert main(["sql", "SELECT * FROM frames", "-o", str(out)]) == 0
    assert pq.read_table(out).num_rows == 10
    first = pq.read_table(frames_dir / "f000.parquet")
    ra, dec = first["RA"][0].as_py(), first["Dec"][0].as_py()
    assert (
        main(["lightcurve", "--ra", str(ra), "--dec", str(dec), "--radius", "2", "--format", "csv"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 11 and lines[0].startswith("frame_id,mjd")
    assert main(["compact", "--no-progress"]) == 0
    assert main(["info"]) == 0
    assert "measurements" in capsys.readouterr().out


def test_ingest_bad_file_exits_1_but_lands_good(tmp_path, frames_dir, capsys):
    store = str(tmp_path / "s")
    main(["init", store])
    (frames_dir / "broken.parquet").write_bytes(b"not parquet")
    assert main(["ingest", "--store", store, str(frames_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "broken.parquet" in err and "rejected 1" in err
    assert (
        main(["sql", "--store", store, "SELECT count(*) AS n FROM frames", "--format", "json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == [{"n": 10}]


@pytest.mark.parametrize("args", [["--strict"], []])
def test_ingest_strict(tmp_path, frames_dir, args, capsys):
    store = str(tmp_path / "s")
    main(["init", store])
    (frames_dir / "broken.parquet").write_bytes(b"not parquet")
    code = main(["ingest", "--store", store, str(frames_dir), "--no-progress", *args])
    assert code == 1
    main(["sql", "--store", store, "SELECT count(*) AS n FROM frames", "--format", "json"])
    n = json.loads(capsys.readouterr().out)[0]["n"]
    assert n == (0 if args else 10)
