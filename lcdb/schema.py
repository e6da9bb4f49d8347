"""Arrow schemas of the store's tables (docs/formats.md §3).

Physical types are chosen for size: float32 where the precision of the measurement allows it
(pixel positions, fluxes: 7 significant digits), float64 for sky positions (float32 would lose
~20 mas at ra ~ 300 deg), int32 flags.
"""

from __future__ import annotations

import pyarrow as pa

FRAMES = pa.schema(
    [
        ("frame_id", pa.int64()),
        ("frame_name", pa.string()),
        ("file", pa.string()),
        ("sha256", pa.string()),
        ("channel", pa.string()),
        ("filter", pa.string()),
        ("mjd", pa.float64()),
        ("exptime", pa.float64()),
        ("naxis1", pa.int32()),
        ("naxis2", pa.int32()),
        ("ra0", pa.float64()),
        ("dec0", pa.float64()),
        ("airmass", pa.float64()),
        ("n_meas", pa.int64()),
        ("fwhm", pa.float32()),
        ("background", pa.float32()),
        ("batch", pa.int64()),
        ("ingested", pa.timestamp("s", tz="UTC")),
        ("status", pa.string()),
        ("status_reason", pa.string()),
    ]
)

#: The photometric model of each frame (seed Eq. 1), written by ``lcdb calibrate`` and replaced by
#: every ``lcdb refine`` iteration; the views join it to ``frames`` and evaluate ``z0`` from it.
PHOTCAL = pa.schema(
    [
        ("frame_id", pa.int64()),
        ("status", pa.string()),
        ("status_reason", pa.string()),
        ("z0_order", pa.int32()),
        ("z0_coeffs", pa.list_(pa.float64())),
        ("color_coeff", pa.float64()),
        ("color_coeff_err", pa.float64()),
        ("cal_rms", pa.float64()),
        ("cal_chi2", pa.float64()),
        ("cal_nstars", pa.int32()),
        ("reference", pa.string()),
        ("iteration", pa.int32()),
    ]
)

MEASUREMENTS = pa.schema(
    [
        ("frame_id", pa.int64()),
        ("healpix_29", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("flux", pa.float32()),
        ("flux_err", pa.float32()),
        ("flags", pa.int32()),
        ("fwhm", pa.float32()),
        ("background", pa.float32()),
        ("object_id", pa.int64()),
    ]
)

REFCAT = pa.schema(
    [
        ("ref_id", pa.int64()),
        ("healpix_29", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("v", pa.float32()),
        ("v_err", pa.float32()),
        ("bv", pa.float32()),
        ("bv_err", pa.float32()),
        ("pmra", pa.float32()),
        ("pmdec", pa.float32()),
        ("epoch", pa.float32()),
        ("blended", pa.bool_()),
        ("name", pa.string()),
    ]
)

OBJECTS = pa.schema(
    [
        ("object_id", pa.int64()),
        ("healpix_29", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("n_obs", pa.int32()),
        ("ref_id", pa.int64()),
        ("v", pa.float32()),
        ("v_err", pa.float32()),
        ("bv", pa.float32()),
        ("bv_err", pa.float32()),
        ("n_colour", pa.int32()),
        ("n_clipped", pa.int32()),
        ("colour_chi2", pa.float32()),
        ("colour_rms", pa.float32()),
        ("c_spread", pa.float32()),
        ("colour_note", pa.string()),
        ("reference", pa.bool_()),
    ]
)

#: Per-object variability statistics over good, calibrated measurements (``lcdb find-variables``;
#: the indices ranked best by Sokolovsky et al. 2017 are ``iqr`` and 1/``eta``).
VARSTATS = pa.schema(
    [
        ("object_id", pa.int64()),
        ("n", pa.int32()),
        ("mean_mag", pa.float64()),
        ("det_mag", pa.float64()),
        ("wmean_mag", pa.float64()),
        ("mean_err", pa.float32()),
        ("std", pa.float32()),
        ("mad_sigma", pa.float32()),
        ("chi2_red", pa.float32()),
        ("iqr", pa.float32()),
        ("eta", pa.float32()),
        ("stetson_j", pa.float32()),
        ("stetson_k", pa.float32()),
        ("amplitude", pa.float32()),
        ("time_span", pa.float32()),
        ("score", pa.float32()),
        ("score_iqr", pa.float32()),
        ("score_eta", pa.float32()),
    ]
)

CANDIDATES = pa.schema(
    [
        ("object_id", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("v", pa.float32()),
        ("bv", pa.float32()),
        ("n", pa.int32()),
        ("mean_mag", pa.float64()),
        ("scatter", pa.float32()),
        ("expected_scatter", pa.float32()),
        ("score", pa.float32()),
        ("index", pa.string()),
        ("iqr", pa.float32()),
        ("eta", pa.float32()),
        ("stetson_j", pa.float32()),
        ("amplitude", pa.float32()),
        ("time_span", pa.float32()),
        ("period", pa.float64()),
        ("period_power", pa.float32()),
        ("fap", pa.float64()),
        ("period_amplitude", pa.float32()),
        ("kind", pa.string()),
        ("blended", pa.bool_()),
        ("known", pa.bool_()),
        ("known_name", pa.string()),
        ("known_type", pa.string()),
        ("known_period", pa.float64()),
        ("known_sep_arcsec", pa.float32()),
    ]
)

#: The expected-noise curve of the scatter-vs-magnitude diagram (seed Fig. 6): for each index, on
#: a grid of mean magnitude, the SuperSmoother trend of log10(index) and its robust spread.
NOISE_CURVE = pa.schema(
    [
        ("index", pa.string()),
        ("mag", pa.float64()),
        ("log_trend", pa.float64()),
        ("log_spread", pa.float64()),
        ("threshold", pa.float64()),
    ]
)

#: One row per refinement iteration (``lcdb refine``): how the solution moved and how good it is.
REFINE_LOG = pa.schema(
    [
        ("run", pa.int64()),
        ("iteration", pa.int32()),
        ("n_reference", pa.int64()),
        ("frames_ok", pa.int64()),
        ("frames_rejected", pa.int64()),
        ("median_cal_rms", pa.float64()),
        ("median_reference_rms", pa.float64()),
        ("dv_p99", pa.float64()),
        ("dbv_p99", pa.float64()),
        ("dzp_p99", pa.float64()),
        ("converged", pa.bool_()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "frames": FRAMES,
    "photcal": PHOTCAL,
    "photcal_staging": PHOTCAL,
    "refine_log": REFINE_LOG,
    "varstats": VARSTATS,
    "noise_curve": NOISE_CURVE,
    "measurements": MEASUREMENTS,
    "refcat": REFCAT,
    "objects": OBJECTS,
    "candidates": CANDIDATES,
}

#: Parquet encodings per column: sorted int64 keys delta-encode far better than dictionary pages,
#: and byte-stream-split lets the codec find the shared high bytes of neighbouring floats.
PARQUET_ENCODINGS = {
    "healpix_29": "DELTA_BINARY_PACKED",
    # frame ids rise along a light curve (files sorted by object): 5x smaller than a dictionary
    "frame_id": "DELTA_BINARY_PACKED",
    "ra": "BYTE_STREAM_SPLIT",
    "dec": "BYTE_STREAM_SPLIT",
    "x": "BYTE_STREAM_SPLIT",
    "y": "BYTE_STREAM_SPLIT",
    "flux": "BYTE_STREAM_SPLIT",
    "flux_err": "BYTE_STREAM_SPLIT",
    "fwhm": "BYTE_STREAM_SPLIT",
    "background": "BYTE_STREAM_SPLIT",
}


def empty(table: str) -> pa.Table:
    """A zero-row table with the schema of ``table``."""
    return SCHEMAS[table].empty_table()


def conform(table: pa.Table, name: str) -> pa.Table:
    """``table`` with the columns of table ``name`` in order, missing ones added as nulls.

    Lets a job rewrite files written by an earlier lcdb whose schema had fewer columns.
    """
    target = SCHEMAS[name]
    for f in target:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(target.names).cast(target)
