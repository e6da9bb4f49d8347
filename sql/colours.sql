-- colours.sql: per-object V and B-V from the scatter of the light curve (seed §3.1).
--
-- For every good measurement of an object, y = instrumental - z0 = V + C_frame (B - V) + noise,
-- so a weighted straight-line fit of y against the frames' colour coefficients C gives the
-- object's V (intercept) and B - V (slope). Everything is a streaming aggregate (weighted sums,
-- and plain ones for the residual rms): the first fit, then the sums of the points more than
-- $clip normalised residuals from it (scaled by its reduced chi2), which are subtracted from
-- the first sums. Clipped points are few, so this costs one grouping of every point instead of
-- the two that a second pass over the kept points would.
-- Runs on the objects of one partition at a time (a partition job, like varstats.sql): $files
-- are the measurement files that can hold their detections (the partition and its neighbours),
-- [$lo, $hi] their object ids; $z0_order the highest order of the frames' Z0 models. The points
-- (unit_points in views.sql) are materialised: both steps read them.
-- Parameters: $files, $lo, $hi, $z0_order, $floor (mag, added in quadrature to each error),
-- $max_err (mag), $clip.
WITH
points AS MATERIALIZED (
    SELECT * FROM unit_points($files, $lo, $hi, $max_err, $floor, $z0_order)
),
pass1 AS (
    SELECT
        object_id, count(*) AS n, sum(w) AS s, sum(w * x) AS sx, sum(w * y) AS sy,
        sum(w * x * x) AS sxx, sum(w * x * y) AS sxy, sum(w * y * y) AS syy,
        sum(x) AS ux, sum(y) AS uy, sum(x * x) AS uxx, sum(x * y) AS uxy, sum(y * y) AS uyy
    FROM points
    GROUP BY object_id
),
solved AS (
    SELECT
        *,
        (sxx * sy - sx * sxy) / (s * sxx - sx * sx) AS v,
        (s * sxy - sx * sy) / (s * sxx - sx * sx) AS bv
    FROM pass1
    WHERE n >= 3 AND s * sxx - sx * sx > 0
),
fit1 AS (
    SELECT
        *,
        greatest(
            (syy - 2 * v * sy - 2 * bv * sxy + v * v * s + 2 * v * bv * sx + bv * bv * sxx)
                / greatest(n - 2, 1),
            1.0
        ) AS chi2
    FROM solved
),
clipped AS (
    SELECT
        p.object_id, count(*) AS n, sum(p.w) AS s, sum(p.w * p.x) AS sx, sum(p.w * p.y) AS sy,
        sum(p.w * p.x * p.x) AS sxx, sum(p.w * p.x * p.y) AS sxy, sum(p.w * p.y * p.y) AS syy,
        sum(p.x) AS ux, sum(p.y) AS uy, sum(p.x * p.x) AS uxx, sum(p.x * p.y) AS uxy,
        sum(p.y * p.y) AS uyy
    FROM points AS p
    JOIN fit1 AS f USING (object_id)
    WHERE abs(p.y - f.v - f.bv * p.x) * sqrt(p.w) > $clip * sqrt(f.chi2)
    GROUP BY p.object_id
),
pass2 AS (
    SELECT
        f.object_id, f.v, f.bv, f.n AS n_all,
        f.n - coalesce(c.n, 0) AS n,
        f.s - coalesce(c.s, 0) AS s, f.sx - coalesce(c.sx, 0) AS sx,
        f.sy - coalesce(c.sy, 0) AS sy, f.sxx - coalesce(c.sxx, 0) AS sxx,
        f.sxy - coalesce(c.sxy, 0) AS sxy, f.syy - coalesce(c.syy, 0) AS syy,
        f.ux - coalesce(c.ux, 0) AS ux, f.uy - coalesce(c.uy, 0) AS uy,
        f.uxx - coalesce(c.uxx, 0) AS uxx, f.uxy - coalesce(c.uxy, 0) AS uxy,
        f.uyy - coalesce(c.uyy, 0) AS uyy
    FROM fit1 AS f
    LEFT JOIN clipped AS c USING (object_id)
),
residuals AS (
    -- plain sums of the kept points' residuals from the first fit, r = y - v - bv x
    SELECT
        *,
        uy - v * n - bv * ux AS sr,
        uyy - 2 * v * uy - 2 * bv * uxy + v * v * n + 2 * v * bv * ux + bv * bv * uxx AS srr
    FROM pass2
)
SELECT
    object_id, n, s, sx, sy, sxx, sxy, syy,
    CASE WHEN n > 1 THEN sqrt(greatest((srr - sr * sr / n) / (n - 1), 0)) END AS rms,
    sqrt(greatest(sxx / s - pow(sx / s, 2), 0)) AS c_spread,
    n_all - n AS n_clipped
FROM residuals;
