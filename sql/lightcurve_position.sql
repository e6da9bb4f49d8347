-- lightcurve_position.sql: every measurement within a radius of a position, in time order.
-- Reads the given partition files directly (no listing of the whole store) and prunes row groups
-- by the order-29 index range [$lo, $hi] before the exact great-circle cut.
-- Parameters: $files (Parquet paths of the cone's partitions), $ra, $dec, $radius_deg, $lo, $hi.
WITH
candidates AS (
    SELECT *
    FROM read_parquet($files)
    WHERE healpix_29 BETWEEN $lo AND $hi
),
in_cone AS (
    SELECT *, ang_sep_deg(ra, dec, $ra, $dec) AS sep_deg
    FROM candidates
    WHERE ang_sep_deg(ra, dec, $ra, $dec) <= $radius_deg
),
timed AS (
    SELECT
        c.frame_id, f.mjd, f.filter, f.channel, c.object_id, c.ra, c.dec, c.x, c.y,
        CASE WHEN c.flux > 0 THEN -2.5 * log10(c.flux) END AS mag_instr,
        CASE WHEN c.flux > 0 THEN 1.0857362047581294 * c.flux_err / c.flux END AS mag_err,
        z0_at(f.z0_coeffs, c.x, c.y, f.naxis1, f.naxis2) AS z0, c.flags,
        f.status AS frame_status, c.sep_deg * 3600 AS sep_arcsec
    FROM in_cone AS c
    JOIN frames AS f USING (frame_id)
)
SELECT * FROM timed ORDER BY mjd;
