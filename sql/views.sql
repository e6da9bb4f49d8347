-- views.sql: the public views and macros of an lcdb store.
--
-- lcdb.store registers the base relations _frames, _photcal, _measurements, _refcat, _objects
-- and _candidates (Parquet files listed by the store's manifest, hive column `pixel`) and the
-- scalar function lcdb_cone_pixels(ra, dec, radius_deg) -> BIGINT[] (partitions overlapping a
-- cone); this file defines everything users query on top of them.

-- The frame zero-point polynomial Z0(xn, yn) of seed Eq. 1 for coefficient list c (terms by total
-- degree, then by the power of yn: 1, xn, yn, xn^2, xn yn, yn^2, ...; orders up to 6), with
-- xn = 2 x / (naxis1 - 1) - 1 and yn likewise (variability.photcal uses the same basis). NULL
-- for a frame without a model. One list function binds ~4x faster than 28 explicit terms.
CREATE OR REPLACE TEMP MACRO z0_poly(c, xn, yn) AS
    list_dot_product(c, list_slice([
        1.0, xn, yn, xn*xn, xn*yn, yn*yn, xn*xn*xn, xn*xn*yn, xn*yn*yn, yn*yn*yn, xn*xn*xn*xn,
        xn*xn*xn*yn, xn*xn*yn*yn, xn*yn*yn*yn, yn*yn*yn*yn, xn*xn*xn*xn*xn, xn*xn*xn*xn*yn,
        xn*xn*xn*yn*yn, xn*xn*yn*yn*yn, xn*yn*yn*yn*yn, yn*yn*yn*yn*yn, xn*xn*xn*xn*xn*xn,
        xn*xn*xn*xn*xn*yn, xn*xn*xn*xn*yn*yn, xn*xn*xn*yn*yn*yn, xn*xn*yn*yn*yn*yn,
        xn*yn*yn*yn*yn*yn, yn*yn*yn*yn*yn*yn
    ], 1, len(c)));

-- Z0 at pixel (x, y) of a frame of naxis1 x naxis2 pixels with coefficients c.
CREATE OR REPLACE TEMP MACRO z0_at(c, x, y, naxis1, naxis2) AS
    z0_poly(c, 2.0 * x / (naxis1 - 1) - 1.0, 2.0 * y / (naxis2 - 1) - 1.0);

-- The same polynomial in Horner form (sums over the power of yn of Horner polynomials in xn) for
-- a row c with coefficient columns c.c0 .. c.c27, zeros past the frame's order: pass the alias
-- of _frame_models, and as max_order the highest order among the frames (a constant: DuckDB folds
-- the CASE, so max_order <= 4 evaluates 14 multiply-adds, else 27). Plain columns and no list make it
-- 3-5x faster than z0_poly, which the per-measurement jobs (colours, magnitudes) need.
CREATE OR REPLACE TEMP MACRO z0_horner(c, xn, yn, max_order) AS CASE
    WHEN max_order <= 4 THEN
        ((((c.c14) * yn
          + (c.c13) * xn + c.c9) * yn
          + ((c.c12) * xn + c.c8) * xn + c.c5) * yn
          + (((c.c11) * xn + c.c7) * xn + c.c4) * xn + c.c2) * yn
          + ((((c.c10) * xn + c.c6) * xn + c.c3) * xn + c.c1) * xn + c.c0
    ELSE
        ((((((c.c27) * yn
          + (c.c26) * xn + c.c20) * yn
          + ((c.c25) * xn + c.c19) * xn + c.c14) * yn
          + (((c.c24) * xn + c.c18) * xn + c.c13) * xn + c.c9) * yn
          + ((((c.c23) * xn + c.c17) * xn + c.c12) * xn + c.c8) * xn + c.c5) * yn
          + (((((c.c22) * xn + c.c16) * xn + c.c11) * xn + c.c7) * xn + c.c4) * xn + c.c2) * yn
          + ((((((c.c21) * xn + c.c15) * xn + c.c10) * xn + c.c6) * xn + c.c3) * xn + c.c1) * xn
          + c.c0
    END;

-- A measurement is good when it carries no flag bit but 4 (salt-and-pepper pixel in the
-- aperture): with a few % of such pixels most apertures contain one (76% at 2%, the reduction's
-- test frames), so the bit is kept as information but does not disqualify (docs/formats.md §4).
CREATE OR REPLACE TEMP MACRO good_flags(f) AS (f & 1019) = 0;

-- The points of a per-object job's unit (sql/colours.sql, sql/magnitudes.sql): every good
-- measurement of objects lo .. hi in the given files (unflagged, positive flux, error at most
-- max_err mag) on a calibrated frame, as y = instrumental - z0, x = the frame's colour
-- coefficient C and the weight w = 1 / (error^2 + floor_mag^2); max_order as for z0_horner.
CREATE OR REPLACE TEMP MACRO unit_points(files, lo, hi, max_err, floor_mag, max_order) AS TABLE
WITH frame_models AS MATERIALIZED (SELECT * FROM _frame_models WHERE status = 'ok'),
m AS (
    -- the magnitude error once, in double precision (fluxes are float32), squared without pow()
    SELECT object_id, frame_id, x, y, flux, 1.0857362047581294 * flux_err::DOUBLE / flux AS e
    FROM read_parquet(files)
    WHERE object_id BETWEEN lo AND hi AND good_flags(flags) AND flux > 0
)
SELECT
    m.object_id,
    -2.5 * log10(m.flux) - z0_horner(
        f, 2.0 * m.x::DOUBLE / (f.naxis1 - 1) - 1.0, 2.0 * m.y::DOUBLE / (f.naxis2 - 1) - 1.0,
        max_order
    ) AS y,
    f.color_coeff AS x,
    1.0 / (m.e * m.e + floor_mag * floor_mag) AS w
FROM m
JOIN frame_models AS f USING (frame_id)
WHERE m.e <= max_err;

-- One row per frame (docs/formats.md §3) with its photometric model once `lcdb calibrate` ran;
-- `status` is the calibration's verdict where there is one.
CREATE OR REPLACE TEMP VIEW frames AS
SELECT
    f.frame_id, f.frame_name, f.file, f.sha256, f.channel, f.filter, f.mjd, f.exptime,
    f.naxis1, f.naxis2, f.ra0, f.dec0, f.airmass, f.n_meas, f.fwhm, f.background, f.batch,
    f.ingested,
    coalesce(p.status, f.status) AS status,
    coalesce(p.status_reason, f.status_reason) AS status_reason,
    p.z0_order, p.z0_coeffs, p.color_coeff, p.color_coeff_err, p.cal_rms, p.cal_chi2,
    p.cal_nstars, p.reference, p.iteration
FROM _frames AS f
LEFT JOIN _photcal AS p ON p.frame_id = f.frame_id;

-- The photometric model of every calibrated frame in the form the per-measurement jobs use:
-- z0c, the Z0 coefficients as a struct for z0_horner, padded with zeros to order 6.
CREATE OR REPLACE TEMP VIEW _frame_models AS
SELECT
    frame_id, status, mjd, naxis1, naxis2, color_coeff,
    coalesce(z0_coeffs[1], 0.0) AS c0, coalesce(z0_coeffs[2], 0.0) AS c1, coalesce(z0_coeffs[3], 0.0) AS c2,
    coalesce(z0_coeffs[4], 0.0) AS c3, coalesce(z0_coeffs[5], 0.0) AS c4, coalesce(z0_coeffs[6], 0.0) AS c5,
    coalesce(z0_coeffs[7], 0.0) AS c6, coalesce(z0_coeffs[8], 0.0) AS c7, coalesce(z0_coeffs[9], 0.0) AS c8,
    coalesce(z0_coeffs[10], 0.0) AS c9, coalesce(z0_coeffs[11], 0.0) AS c10, coalesce(z0_coeffs[12], 0.0) AS c11,
    coalesce(z0_coeffs[13], 0.0) AS c12, coalesce(z0_coeffs[14], 0.0) AS c13, coalesce(z0_coeffs[15], 0.0) AS c14,
    coalesce(z0_coeffs[16], 0.0) AS c15, coalesce(z0_coeffs[17], 0.0) AS c16, coalesce(z0_coeffs[18], 0.0) AS c17,
    coalesce(z0_coeffs[19], 0.0) AS c18, coalesce(z0_coeffs[20], 0.0) AS c19, coalesce(z0_coeffs[21], 0.0) AS c20,
    coalesce(z0_coeffs[22], 0.0) AS c21, coalesce(z0_coeffs[23], 0.0) AS c22, coalesce(z0_coeffs[24], 0.0) AS c23,
    coalesce(z0_coeffs[25], 0.0) AS c24, coalesce(z0_coeffs[26], 0.0) AS c25, coalesce(z0_coeffs[27], 0.0) AS c26,
    coalesce(z0_coeffs[28], 0.0) AS c27
FROM frames
WHERE z0_coeffs IS NOT NULL;

-- Per-frame photometry, with instrumental magnitudes derived from the stored ADU/s fluxes.
CREATE OR REPLACE TEMP VIEW measurements AS
SELECT
    *,
    CASE WHEN flux > 0 THEN -2.5 * log10(flux) END AS mag_instr,
    CASE WHEN flux > 0 THEN 1.0857362047581294 * flux_err / flux END AS mag_err
FROM _measurements;

CREATE OR REPLACE TEMP VIEW refcat AS
SELECT * FROM _refcat;

CREATE OR REPLACE TEMP VIEW objects AS
SELECT * FROM _objects;

CREATE OR REPLACE TEMP VIEW candidates AS
SELECT * FROM _candidates;

-- Light curves: measurements with their frame's time and filter, the zero point z0 = Z0(x, y) of
-- their frame's model once `lcdb calibrate` ran, and the calibrated magnitude of seed Eq. 1 solved
-- for V once `lcdb colours` gave the object a colour: V = instrumental - z0 - C_frame (B - V).
CREATE OR REPLACE TEMP VIEW lightcurves AS
SELECT
    m.object_id,
    m.frame_id,
    f.mjd,
    f.filter,
    f.channel,
    m.ra,
    m.dec,
    m.x,
    m.y,
    m.mag_instr,
    m.mag_err,
    z0_at(f.z0_coeffs, m.x, m.y, f.naxis1, f.naxis2) AS z0,
    f.color_coeff,
    m.mag_instr - z0_at(f.z0_coeffs, m.x, m.y, f.naxis1, f.naxis2) - f.color_coeff * o.bv AS mag,
    m.flags,
    f.status AS frame_status,
    m.pixel,
    m.healpix_29
FROM measurements AS m
JOIN frames AS f USING (frame_id)
LEFT JOIN objects AS o USING (object_id);

-- Great-circle separation in degrees (haversine: accurate at arcsecond separations).
CREATE OR REPLACE TEMP MACRO ang_sep_deg(ra1, dec1, ra2, dec2) AS
    degrees(2 * asin(sqrt(least(1.0,
        pow(sin(radians(dec2 - dec1) / 2), 2)
        + cos(radians(dec1)) * cos(radians(dec2)) * pow(sin(radians(ra2 - ra1) / 2), 2)))));

-- Measurements within radius_deg of (ra0, dec0); only the overlapping partitions are read.
CREATE OR REPLACE TEMP MACRO cone_search(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM measurements
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;

-- Reference-catalogue stars within radius_deg of (ra0, dec0).
CREATE OR REPLACE TEMP MACRO refcat_cone(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM refcat
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;

-- Objects within radius_deg of (ra0, dec0).
CREATE OR REPLACE TEMP MACRO objects_cone(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM objects
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;

-- One row per iteration of `lcdb refine`.
CREATE OR REPLACE TEMP VIEW refine_log AS
SELECT * FROM _refine_log;

-- Per-object variability statistics and the noise curve written by `lcdb find-variables`.
CREATE OR REPLACE TEMP VIEW varstats AS
SELECT * FROM _varstats;

CREATE OR REPLACE TEMP VIEW noise_curve AS
SELECT * FROM _noise_curve;
