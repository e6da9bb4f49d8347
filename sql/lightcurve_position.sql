-- lightcurve_position.sql: measurements that can lie within a small cone, with their frames.
-- Reads the given partition files directly (no listing of the whole store) and prunes row groups
-- by the order-29 index range [$lo, $hi]; Store.lightcurve_by_position makes the exact
-- great-circle cut and evaluates z0 in numpy (cheaper than planning the SQL macros per query).
-- Parameters: $files (Parquet paths of the cone's partitions), $lo, $hi.
SELECT
    c.frame_id, f.mjd, f.filter, f.channel, c.object_id, c.ra, c.dec, c.x, c.y, c.flux,
    c.flux_err, c.flags, f.z0_coeffs, f.naxis1, f.naxis2, f.status AS frame_status
FROM read_parquet($files) AS c
JOIN frames AS f USING (frame_id)
WHERE c.healpix_29 BETWEEN $lo AND $hi;
