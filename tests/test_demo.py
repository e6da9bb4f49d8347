"""The README's first command: the demo runs the whole chain and reports against the truth."""

from __future__ import annotations

from astropy.table import Table

from lcdb.cli import main


def test_demo_runs_every_stage_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--dir", str(out), "--frames", "60", "--stars", "1200", "--seed", "2"]) == 0
    )
    report = capsys.readouterr().out
    for stage in ("ingested", "clustered", "calibrated", "colours", "refined", "variables"):
        assert stage in report, report
    # All simulated detections reach the store.
    assert "(all of them)" in report
    assert (out / "plots" / "diagram-after-refine.png").stat().st_size > 10_000
    cands = Table.read(out / "candidates.fits")
    assert "object_id" in cands.colnames
    # Re-running into the same folder replaces the demo store instead of failing.
    assert main(["demo", "--dir", str(out), "--frames", "30", "--stars", "1000"]) == 0


def test_demo_bad_arguments(tmp_path):
    assert main(["demo", "--dir", str(tmp_path), "--frames", "3"]) == 2
    assert main(["demo", "--dir", str(tmp_path), "--stars", "50"]) == 2
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "precious.txt").write_text("not a store")
    assert main(["demo", "--dir", str(tmp_path)]) == 2
    assert (tmp_path / "store" / "precious.txt").exists()
