"""``lcdb calibrate``: fit the photometric model of every frame (seed Eq. 1).

Reference stars are found through the clustering (an object tied to a refcat star carries its
``ref_id``), so the positional match to the catalogue is done once, with proper motions, by
``lcdb cluster`` rather than again for every frame. The job streams the qualifying measurements
out of DuckDB in frame order into chunk files (never the whole table in memory), fits each frame
with :func:`variability.photcal.fit_frame` in parallel units, and finally rejects frames whose fit
is poor compared with the rest (rms far above the median: clouds) or which hold far fewer
reference stars than frames of the same channel (bad weather), with the reason. Frame models go to
the ``photcal`` table, which the views join to ``frames`` to give ``z0`` per measurement.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lcdb import layout, manifest, schema, sqlfiles
from lcdb.errors import InputError
from lcdb.runner import RunnerOptions, UnitOutput, run_job
from lcdb.store import Store
from lcdb.tableio import read_parquet, write_parquet
from variability.photcal import FitConfig, fit_frame, normalise

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrateConfig:
    """Parameters of a calibration run.

    Parameters
    ----------
    fit : FitConfig
        Order of Z0, clipping, acceptance of one frame's fit.
    reference : str
        ``"refcat"`` (the reference catalogue) or ``"objects"`` (reconstructed objects flagged
        ``reference`` by ``lcdb refine``).
    frames_per_unit : int
        Frames fitted by one unit of work.
    max_rms_ratio : float
        A frame whose fit rms exceeds this multiple of the median of comparable frames (same
        channel, filter, exposure) is rejected.
    min_star_ratio : float
        A frame with fewer detections than this fraction of the median of comparable frames is
        rejected.
    iteration : int
        Refinement iteration recorded with each model (0: ``lcdb calibrate``).
    """

    fit: FitConfig = field(default_factory=FitConfig)
    reference: str = "refcat"
    frames_per_unit: int = 100
    max_rms_ratio: float = 1.8
    min_star_ratio: float = 0.7
    iteration: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.reference not in ("refcat", "objects"):
            problems.append(f"reference must be 'refcat' or 'objects', got {self.reference!r}")
        if self.frames_per_unit < 1:
            problems.append(f"frames_per_unit must be >= 1, got {self.frames_per_unit}")
        if not self.max_rms_ratio > 1:
            problems.append(f"max_rms_ratio must be > 1, got {self.max_rms_ratio}")
        if not 0 <= self.min_star_ratio < 1:
            problems.append(f"min_star_ratio must be in [0, 1), got {self.min_star_ratio}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class CalibrateJob:
    """Fit the frames of one chunk of frame ids per unit."""

    config: CalibrateConfig
    name: str = "calibrate"

    def units(self, store: Store) -> list[tuple[str, Any]]:
        frames = store.sql("SELECT frame_id, naxis1, naxis2 FROM _frames ORDER BY frame_id")
        ids = frames["frame_id"].to_numpy()
        n = self.config.frames_per_unit
        scratch = layout.scratch_dir(store.root, self.name)
        scratch.mkdir(parents=True, exist_ok=True)
        query = sqlfiles.load(f"calibration_stars_{self.config.reference}")
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        reader = store.con.sql(query).to_arrow_reader(1_000_000)
        for batch in reader:
            fid = batch.column(0).to_numpy()
            chunk = np.searchsorted(ids, fid) // n  # ids are sorted: the frame's rank, chunked
            order = np.argsort(chunk, kind="stable")
            batch = batch.take(pa.array(order))
            cs, starts = np.unique(chunk[order], return_index=True)
            for c, lo, hi in zip(cs.tolist(), starts, np.r_[starts[1:], chunk.size], strict=True):
                part = batch.slice(lo, hi - lo)
                if c not in writers:
                    # Scratch files, read once: Arrow IPC writes at memory speed (Parquet with
                    # zstd made this step 3x slower, serial, in the runner's process).
                    path = scratch / f"chunk-{c:06d}.arrow"
                    writers[c] = pa.ipc.new_file(path, part.schema)
                writers[c].write_batch(part)
        for w in writers.values():
            w.close()
        units = []
        shapes = zip(frames["naxis1"].to_pylist(), frames["naxis2"].to_pylist(), strict=True)
        sizes = dict(zip(ids.tolist(), shapes, strict=True))
        for c in range((len(ids) + n - 1) // n):
            chunk_ids = ids[c * n : (c + 1) * n].tolist()
            path = scratch / f"chunk-{c:06d}.arrow"
            units.append(
                (
                    f"chunk={c}",
                    {
                        "stars": str(path) if path.exists() else None,
                        "frames": {f: sizes[f] for f in chunk_ids},
                    },
                )
            )
        return units

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        cfg = self.config
        stars = None
        if payload["stars"]:
            with pa.ipc.open_file(payload["stars"]) as f:
                stars = f.read_all()
        rows = []
        if stars is not None:
            fid = stars["frame_id"].to_numpy()
            by_frame = np.argsort(fid, kind="stable")  # the stars arrive in no particular order
            fid_sorted = fid[by_frame]
            cols = {c: stars[c].to_numpy(zero_copy_only=False) for c in stars.column_names}
        for frame_id, (nx, ny) in payload["frames"].items():
            if stars is None:
                sel = np.empty(0, np.int64)
            else:
                lo, hi = np.searchsorted(fid_sorted, [frame_id, frame_id + 1])
                sel = by_frame[lo:hi]
            if sel.size == 0:
                rows.append(_row(frame_id, cfg, None, "no reference stars on the frame"))
                continue
            xn, yn = normalise(cols["x"][sel], cols["y"][sel], nx, ny)
            v_err = np.asarray(cols["v_err"][sel], float)
            v = np.asarray(cols["v"][sel], float)
            fit_cfg = cfg.fit
            fixed = "c_fixed" in cols
            if fixed:  # C stays at the refcat calibration's value; only Z0 is refitted
                c = float(cols["c_fixed"][sel][0])
                v = v + c * np.asarray(cols["bv"][sel], float)
                fit_cfg = dataclasses.replace(cfg.fit, fit_color=False)
            fit = fit_frame(
                xn,
                yn,
                cols["mag"][sel],
                cols["mag_err"][sel],
                v,
                cols["bv"][sel],
                v_err=v_err,
                config=fit_cfg,
            )
            if fixed and fit.ok:
                fit.color, fit.color_err = c, float(cols["c_fixed_err"][sel][0])
            rows.append(_row(frame_id, cfg, fit, fit.reason))
        table = pa.Table.from_pylist(rows, schema=schema.PHOTCAL)
        path = layout.new_flat_file(Path(root), "photcal_staging", f"cal-{key.split('=')[1]}")
        write_parquet(table, path)
        n_ok = sum(r["status"] == "ok" for r in rows)
        return UnitOutput(
            key=key,
            add=[("photcal_staging", str(path), table.num_rows, {})],
            stats={"frames": float(len(rows)), "fitted": float(n_ok)},
        )


def _row(frame_id: int, cfg: CalibrateConfig, fit, reason: str) -> dict:
    ok = fit is not None and fit.ok
    return {
        "frame_id": int(frame_id),
        "status": "ok" if ok else "rejected",
        "status_reason": None if ok else reason,
        "z0_order": cfg.fit.order,
        "z0_coeffs": fit.coeffs.tolist() if ok else None,
        "color_coeff": fit.color if ok else None,
        "color_coeff_err": fit.color_err if ok else None,
        "cal_rms": fit.rms if ok else None,
        "cal_chi2": fit.chi2 if ok else None,
        "cal_nstars": fit.n_used if fit is not None and fit.ok else 0,
        "reference": cfg.reference,
        "iteration": cfg.iteration,
    }


def _reject_outliers(cal: pa.Table, frames: dict[int, tuple], cfg: CalibrateConfig) -> pa.Table:
    """Reject frames with a poor fit or far fewer detections than comparable frames.

    Frames compare with the others of the same channel, filter and exposure time (the same
    footprint depth): a fit rms above ``max_rms_ratio`` times their median means structure the
    model cannot follow (patchy cloud); fewer than ``min_star_ratio`` times their median number of
    detections means a brighter limit (bad weather). On the simulated survey good frames stay
    within 1.4x the median rms and above 0.8x the median count; cloud-ruined ones reach 1.9-2.5x
    and 0.4-0.65x.
    """
    rows = cal.to_pylist()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            key, _ = frames.get(r["frame_id"], (("",), 0))
            groups.setdefault(key, []).append(r)
    for group in groups.values():
        rms = float(np.median([r["cal_rms"] for r in group]))
        n_med = float(np.median([frames[r["frame_id"]][1] for r in group]))
        for r in group:
            n = frames[r["frame_id"]][1]
            if r["cal_rms"] > cfg.max_rms_ratio * rms:
                r["status"] = "rejected"
                r["status_reason"] = (
                    f"poor fit: rms {r['cal_rms']:.3f} mag > {cfg.max_rms_ratio} x median {rms:.3f}"
                )
            elif n < cfg.min_star_ratio * n_med:
                r["status"] = "rejected"
                r["status_reason"] = (
                    f"few detections: {n} < {cfg.min_star_ratio} x median {n_med:.0f} (clouds?)"
                )
    return pa.Table.from_pylist(rows, schema=schema.PHOTCAL)


def check_ready(store: Store, reference: str) -> None:
    """Clear errors for a store that cannot be calibrated yet."""
    if store.count("frames") == 0:
        raise InputError(f"{store.root}: the store has no frames (run `lcdb ingest` first)")
    if store.count("objects") == 0:
        raise InputError(f"{store.root}: no objects yet (run `lcdb cluster` first)")
    if reference == "refcat":
        if store.count("refcat") == 0:
            raise InputError(f"{store.root}: no reference catalogue (run `lcdb refcat load FILE`)")
        n = store.sql("SELECT count(*) FROM objects WHERE ref_id IS NOT NULL").column(0)[0]
        if n.as_py() == 0:
            raise InputError(
                f"{store.root}: no reference-catalogue star matches a measured object: the "
                "refcat does not cover the field of the measurements"
            )


def calibrate(
    store: Store, config: CalibrateConfig | None = None, options: RunnerOptions | None = None
) -> dict:
    """Calibrate every frame of ``store``; returns summary figures."""
    config = config or CalibrateConfig(fit=FitConfig(order=store.config.z0_order))
    check_ready(store, config.reference)
    job = CalibrateJob(config)
    summary = run_job(store, job, options or RunnerOptions())
    shutil.rmtree(layout.scratch_dir(store.root, job.name), ignore_errors=True)
    info = store.sql("SELECT frame_id, channel, filter, exptime, n_meas FROM _frames").to_pylist()
    frames = {r["frame_id"]: ((r["channel"], r["filter"], r["exptime"]), r["n_meas"]) for r in info}
    with manifest.transaction(store.root) as tx:
        staged = tx.live_entries("photcal_staging")
        cal = read_parquet([store.root / e["path"] for e in staged])
        cal = _reject_outliers(cal.sort_by("frame_id"), frames, config)
        for e in staged:
            tx.remove("photcal_staging", e["path"])
        for e in tx.live_entries("photcal"):
            tx.remove("photcal", e["path"])
        path = layout.new_flat_file(store.root, "photcal", "photcal")
        write_parquet(cal, path)
        tx.add("photcal", path, cal.num_rows)
        tx.commit()
    store.refresh()
    status = cal["status"].to_pylist()
    ok = [i for i, s in enumerate(status) if s == "ok"]
    rms = np.asarray(cal["cal_rms"].to_pylist(), dtype=float)[ok] if ok else np.empty(0)
    out = {
        "frames": cal.num_rows,
        "calibrated": len(ok),
        "rejected": cal.num_rows - len(ok),
        "median_rms": float(np.median(rms)) if rms.size else float("nan"),
        "units": summary.units,
    }
    _log.info(
        "calibrate: %d frame(s), %d calibrated, %d rejected; median rms %.4f mag",
        out["frames"],
        out["calibrated"],
        out["rejected"],
        out["median_rms"],
    )
    return out
