-- magnitudes.sql: per-object V with B-V held at its reconstructed value (`lcdb refine`).
--
-- y = instrumental - z0 - C_frame (B - V)_object is V plus noise on every good measurement; the
-- weighted mean gives V, in two passes (the second drops points beyond $clip normalised
-- residuals of the first, scaled by its reduced chi2). Streaming aggregates only.
-- Runs on the objects of one partition at a time, like colours.sql: $files are the measurement
-- files that can hold their detections, $objects the partition's objects files, [$lo, $hi] their
-- object ids, $z0_order the highest order of the frames' Z0 models.
-- Parameters: $files, $objects, $lo, $hi, $z0_order, $floor (mag, added in quadrature to each
-- error), $max_err (mag), $clip.
WITH
points AS MATERIALIZED (
    SELECT p.object_id, p.y - p.x * o.bv AS y, p.w
    FROM unit_points($files, $lo, $hi, $max_err, $floor, $z0_order) AS p
    JOIN read_parquet($objects) AS o USING (object_id)
    WHERE o.bv IS NOT NULL
),
pass1 AS (
    SELECT
        object_id, count(*) AS n, sum(w * y) / sum(w) AS v,
        greatest((sum(w * y * y) - pow(sum(w * y), 2) / sum(w)) / greatest(count(*) - 1, 1), 1.0)
            AS chi2
    FROM points
    GROUP BY object_id
),
kept AS (
    SELECT p.object_id, p.y, p.w
    FROM points AS p
    JOIN pass1 AS f USING (object_id)
    WHERE abs(p.y - f.v) * sqrt(p.w) <= $clip * sqrt(f.chi2)
),
pass2 AS (
    SELECT
        object_id, count(*) AS n, sum(w) AS s, sum(w * y) AS sy, sum(w * y * y) AS syy,
        stddev_samp(y) AS rms
    FROM kept
    GROUP BY object_id
)
SELECT
    p.object_id,
    p.n,
    p.sy / p.s AS v,
    sqrt(1.0 / p.s) AS v_err_stat,
    (p.syy - pow(p.sy, 2) / p.s) / greatest(p.n - 1, 1) AS chi2,
    p.rms,
    a.n - p.n AS n_clipped
FROM pass2 AS p
JOIN pass1 AS a USING (object_id);
