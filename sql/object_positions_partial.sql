-- object_positions_partial.sql: sql/object_positions.sql from the assignment's partial sums.
--
-- Each unit of the assignment (variability/assign.py) writes, per object among the rows of the
-- partition it rewrote, the count, the sums of ra, dec and of ra shifted to -180..180, the ra
-- range, and the unit-vector sums and count of the rows within 10 deg of a pole. An object's
-- rows lie in its partition and its neighbours', so up to nine partial rows combine here into
-- the row sql/object_positions.sql computes by scanning every measurement (same columns, same
-- meaning; equal to rounding, tests/test_cluster_calibrate.py). Parameters: $files.
WITH partial AS (
    SELECT * FROM read_parquet($files)
)
SELECT
    object_id,
    sum(n)::INTEGER AS n,
    sum(s_ra) / sum(n) AS ra_mean,
    sum(s_dec) / sum(n) AS dec_mean,
    max(ra_max) - min(ra_min) AS ra_span,
    sum(s_ra_w) / sum(n) AS ra_w,
    CASE WHEN sum(n_polar) > 0 THEN sum(ux) END AS ux,
    CASE WHEN sum(n_polar) > 0 THEN sum(uy) END AS uy,
    CASE WHEN sum(n_polar) > 0 THEN sum(uz) END AS uz,
    sum(n_polar)::BIGINT AS n_polar
FROM partial
GROUP BY object_id;
