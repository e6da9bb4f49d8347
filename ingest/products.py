"""What ``lcdb reduce`` writes: the per-frame catalogue, the QA table, FITS product headers.

The catalogue follows docs/formats.md §1: Parquet with the frame keywords (``MJD-OBS``,
``EXPTIME``, ``FILTER``, ``CHANNEL``, ``NAXIS1/2``, ``FRAMEID``, ``AIRMASS``, ``RA``, ``DEC``)
and QA keywords (``FWHM``, ``ASTRMS``, ``BKG`` ...) in the schema metadata, written under a
temporary name and renamed. The QA table is CSV (see :func:`write_qa`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from ingest.reduce import FrameOutcome


def fits_cards(wcs: Any, cards: dict[str, Any]) -> Any:
    """Header of a FITS product of a frame: its refined WCS and identifying keywords."""
    header = wcs.to_header(relax=True)
    for key in ("FRAMEID", "MJD-OBS", "EXPTIME", "FILTER", "CHANNEL"):
        if cards.get(key) is not None:
            header[key] = cards[key]
    return header


def write_catalogue(
    path: Path, cols: dict[str, np.ndarray], ra: np.ndarray, dec: np.ndarray, cards: dict
) -> None:
    """Write a per-frame catalogue (docs/formats.md §1) atomically (temporary name, rename)."""
    table = pa.table({
        "ra": np.asarray(ra, np.float64) % 360, "dec": np.asarray(dec, np.float64),
        "x": cols["x"].astype(np.float32), "y": cols["y"].astype(np.float32),
        "flux": cols["flux"].astype(np.float32), "flux_err": cols["flux_err"].astype(np.float32),
        "flags": cols["flags"].astype(np.int32), "fwhm": cols["fwhm"].astype(np.float32),
        "background": cols["background"].astype(np.float32),
        "a": cols["a"].astype(np.float32), "b": cols["b"].astype(np.float32),
        "theta": cols["theta"].astype(np.float32), "npix": cols["npix"].astype(np.int32),
    })  # fmt: skip
    meta = {k: str(v) for k, v in cards.items() if v is not None}
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    tmp.replace(path)


def write_qa(path: Path, outcomes: Sequence[FrameOutcome]) -> Path:
    """Merge the QA rows of ``outcomes`` into the CSV table at ``path`` (same frame: replaced).

    CSV rather than Parquet: `lcdb ingest DIR` reads every Parquet, FITS and ECSV file under
    DIR as a catalogue, and the QA table shares the directory with the catalogues.
    """
    keys = sorted({k for o in outcomes for k in o.qa})
    rows = [{"frame": o.frame, "file": o.file, "status": o.status, "reason": o.reason,
             "catalogue": o.catalogue, **{k: o.qa.get(k) for k in keys}}
            for o in outcomes]  # fmt: skip
    table = pa.Table.from_pylist(rows)
    if path.exists():
        old = pacsv.read_csv(path)
        frames = set(table["frame"].to_pylist())
        keep = [i for i, f in enumerate(old["frame"].to_pylist()) if f not in frames]
        if keep:
            table = pa.concat_tables([old.take(keep), table], promote_options="permissive")
    tmp = path.with_name(path.name + ".part")
    pacsv.write_csv(table, tmp)
    tmp.replace(path)
    return path
