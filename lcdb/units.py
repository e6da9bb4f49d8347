"""Units and descriptions of every exported column: the one place that defines them.

Used by :mod:`lcdb.export` for FITS (TUNITn, TCOMMn), VOTable (unit, DESCRIPTION, ucd), ECSV and
Parquet (Arrow field metadata and the VOParquet header). Units are astropy / VOUnit strings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Col:
    """Unit (astropy / VOUnit string, None when dimensionless), description and optional UCD."""

    unit: str | None
    description: str
    ucd: str | None = None


#: Every exported column (objects, varstats, candidates, light curves), by name; a table whose
#: column means something else under the same name overrides it in :data:`TABLE_COLUMNS`.
COLUMNS: dict[str, Col] = {
    "object_id": Col(None, "object identifier (stable within the store)", "meta.id;meta.main"),
    "healpix_29": Col(None, "nested HEALPix index of the position at order 29", "pos.healpix"),
    "ra": Col("deg", "ICRS right ascension", "pos.eq.ra;meta.main"),
    "dec": Col("deg", "ICRS declination", "pos.eq.dec;meta.main"),
    "n_obs": Col(None, "number of measurements of the object"),
    "ref_id": Col(None, "matched reference-catalogue star (null: none)", "meta.id.cross"),
    "v": Col("mag", "V reconstructed from the white-light photometry", "phot.mag;em.opt.V"),
    "v_err": Col("mag", "error of v", "stat.error;phot.mag"),
    "bv": Col("mag", "B-V colour reconstructed from the frame colour terms", "phot.color"),
    "bv_err": Col("mag", "error of bv", "stat.error;phot.color"),
    "n_colour": Col(None, "measurements used by the colour fit"),
    "n_clipped": Col(None, "measurements clipped by the colour fit"),
    "colour_chi2": Col(None, "reduced chi-square of the colour fit"),
    "colour_rms": Col("mag", "rms of the colour-fit residuals"),
    "c_spread": Col(None, "spread of the frame colour coefficient C over the object's frames"),
    "colour_note": Col(None, "why the colour is missing, if it is"),
    "reference": Col(None, "used as a reference star by the refinement"),
    "n": Col(None, "good points of the statistics (calibrated frame, no flag, small error)"),
    "mean_mag": Col("mag", "mean calibrated magnitude", "phot.mag;stat.mean"),
    "det_mag": Col("mag", "mean magnitude through the frame-centre zero point (noise-curve x)"),
    "wmean_mag": Col("mag", "inverse-variance weighted mean magnitude", "phot.mag;stat.mean"),
    "mean_err": Col("mag", "mean photometric error", "stat.error;phot.mag"),
    "std": Col("mag", "standard deviation of the magnitudes", "stat.stdev;phot.mag"),
    "mad_sigma": Col("mag", "1.4826 x median absolute deviation of the magnitudes"),
    "chi2_red": Col(None, "reduced chi-square about the weighted mean"),
    "iqr": Col("mag", "interquartile range of the magnitudes"),
    "eta": Col(None, "von Neumann ratio eta (Sokolovsky et al. 2017)"),
    "stetson_j": Col(None, "Stetson J index"),
    "stetson_k": Col(None, "Stetson K index"),
    "amplitude": Col("mag", "5th to 95th percentile range of the magnitudes"),
    "time_span": Col("d", "time between the first and last good point"),
    "score": Col(None, "std score: (log10 std - noise-curve trend) / robust spread"),
    "score_iqr": Col(None, "iqr score: (log10 iqr - noise-curve trend) / robust spread"),
    "score_eta": Col(None, "1/eta score: (log10(1/eta) - noise-curve trend) / robust spread"),
    "scatter": Col("mag", "standard deviation of the magnitudes (the seed's scatter)"),
    "expected_scatter": Col("mag", "noise-curve standard deviation at the object's det_mag"),
    "index": Col(None, "index with the highest score: std, iqr or inv_eta (1/eta)"),
    "period": Col("d", "best Lomb-Scargle period (2P if phase dispersion says so)", "time.period"),
    "period_power": Col(None, "Lomb-Scargle power at the period"),
    "fap": Col(None, "false-alarm probability of the period (Baluev 2008)", "stat.probability"),
    "period_amplitude": Col("mag", "peak-to-peak amplitude of the fit at the period"),
    "kind": Col(None, "variability hint: periodic, transient or aperiodic", "src.class"),
    "blended": Col(None, "a brighter object lies within the blend radius"),
    "known": Col(None, "matched to the catalogue of known variables (null: none given)"),
    "known_name": Col(None, "name of the known variable", "meta.id.cross"),
    "known_type": Col(None, "catalogued variability type", "src.class"),
    "known_period": Col("d", "catalogued period", "time.period"),
    "known_sep_arcsec": Col("arcsec", "separation from the known variable", "pos.angDistance"),
    "frame_id": Col(None, "frame identifier", "meta.id"),
    "mjd": Col("d", "UTC MJD of mid-exposure", "time.epoch"),
    "filter": Col(None, "filter name", "instr.filter"),
    "channel": Col(None, "camera / telescope channel", "instr.setup"),
    "mag": Col("mag", "calibrated V magnitude (seed Eq. 1; null without a colour)", "phot.mag"),
    "mag_err": Col("mag", "photometric error of mag (calibration error not included)"),
    "mag_instr": Col("mag", "instrumental magnitude -2.5 log10(ADU/s)", "phot.mag"),
    "z0": Col("mag", "zero point Z0(x, y) of the frame's photometric model"),
    "flags": Col(None, "measurement flag bits (docs/formats.md section 4)", "meta.code.qual"),
    "frame_status": Col(None, "frame calibration verdict (ok or rejected)", "meta.code.qual"),
}
TABLE_COLUMNS: dict[str, dict[str, Col]] = {
    "candidates": {
        "score": Col(None, "highest score over the selected indices (see index)"),
    },
    "lightcurves_binned": {
        "mjd": Col("d", "mean UTC MJD of the points in the bin", "time.epoch"),
        "mjd_min": Col("d", "first MJD in the bin", "time.start"),
        "mjd_max": Col("d", "last MJD in the bin", "time.end"),
        "mag": Col("mag", "mean calibrated V magnitude of the bin", "phot.mag;stat.mean"),
        "mag_err": Col("mag", "error of the mean from the point errors: sqrt(sum err^2) / n"),
        "mag_err_scatter": Col("mag", "error of the mean from the scatter: std / sqrt(n)"),
        "n_points": Col(None, "good points in the bin (n)"),
    },
}


def column_info(table: str, column: str) -> Col | None:
    """Unit and description of ``column`` of ``table`` (None for an unknown column)."""
    return TABLE_COLUMNS.get(table, {}).get(column) or COLUMNS.get(column)
