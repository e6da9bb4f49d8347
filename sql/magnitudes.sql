-- magnitudes.sql: per-object V with B-V held at its reconstructed value (`lcdb refine`).
--
-- y = instrumental - z0 - C_frame (B - V)_object is V plus noise on every good measurement; the
-- weighted mean gives V, from the sums of all points minus those of the points beyond $clip
-- normalised residuals of a first mean (scaled by its reduced chi2), as in colours.sql.
-- Streaming aggregates only.
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
        object_id, count(*) AS n, sum(w) AS s, sum(w * y) AS sy, sum(w * y * y) AS syy,
        sum(y) AS uy, sum(y * y) AS uyy,
        sum(w * y) / sum(w) AS v,
        greatest((sum(w * y * y) - pow(sum(w * y), 2) / sum(w)) / greatest(count(*) - 1, 1), 1.0)
            AS chi2
    FROM points
    GROUP BY object_id
),
clipped AS (
    SELECT
        p.object_id, count(*) AS n, sum(p.w) AS s, sum(p.w * p.y) AS sy,
        sum(p.w * p.y * p.y) AS syy, sum(p.y) AS uy, sum(p.y * p.y) AS uyy
    FROM points AS p
    JOIN pass1 AS f USING (object_id)
    WHERE abs(p.y - f.v) * sqrt(p.w) > $clip * sqrt(f.chi2)
    GROUP BY p.object_id
),
pass2 AS (
    SELECT
        a.object_id, a.n AS n_all,
        a.n - coalesce(c.n, 0) AS n, a.s - coalesce(c.s, 0) AS s,
        a.sy - coalesce(c.sy, 0) AS sy, a.syy - coalesce(c.syy, 0) AS syy,
        a.uy - coalesce(c.uy, 0) AS uy, a.uyy - coalesce(c.uyy, 0) AS uyy
    FROM pass1 AS a
    LEFT JOIN clipped AS c USING (object_id)
    WHERE a.n > coalesce(c.n, 0)
)
SELECT
    object_id,
    n,
    sy / s AS v,
    sqrt(1.0 / s) AS v_err_stat,
    (syy - pow(sy, 2) / s) / greatest(n - 1, 1) AS chi2,
    CASE WHEN n > 1 THEN sqrt(greatest((uyy - uy * uy / n) / (n - 1), 0)) END AS rms,
    n_all - n AS n_clipped
FROM pass2;
