-- colours.sql: per-object V and B-V from the scatter of the light curve (seed §3.1).
--
-- For every good measurement of an object, y = instrumental - z0 = V + C_frame (B - V) + noise,
-- so a weighted straight-line fit of y against the frames' colour coefficients C gives the
-- object's V (intercept) and B - V (slope). Everything is a streaming aggregate (weighted sums),
-- in two passes: the second drops points more than $clip normalised residuals from the first fit
-- (scaled by that fit's reduced chi2), which removes unflagged outliers.
-- Runs on the objects of one partition at a time (a partition job, like varstats.sql): $files
-- are the measurement files that can hold their detections (the partition and its neighbours),
-- [$lo, $hi] their object ids; $z0_order the highest order of the frames' Z0 models. The points
-- (unit_points in views.sql) are materialised: both passes read them.
-- Parameters: $files, $lo, $hi, $z0_order, $floor (mag, added in quadrature to each error),
-- $max_err (mag), $clip.
WITH
points AS MATERIALIZED (
    SELECT * FROM unit_points($files, $lo, $hi, $max_err, $floor, $z0_order)
),
pass1 AS (
    SELECT
        object_id, count(*) AS n, sum(w) AS s, sum(w * x) AS sx, sum(w * y) AS sy,
        sum(w * x * x) AS sxx, sum(w * x * y) AS sxy, sum(w * y * y) AS syy
    FROM points
    GROUP BY object_id
),
fit1 AS (
    SELECT
        object_id,
        (sxx * sy - sx * sxy) / (s * sxx - sx * sx) AS v,
        (s * sxy - sx * sy) / (s * sxx - sx * sx) AS bv,
        greatest(
            (syy - 2 * ((sxx * sy - sx * sxy) / (s * sxx - sx * sx)) * sy
             - 2 * ((s * sxy - sx * sy) / (s * sxx - sx * sx)) * sxy
             + pow((sxx * sy - sx * sxy) / (s * sxx - sx * sx), 2) * s
             + 2 * ((sxx * sy - sx * sxy) / (s * sxx - sx * sx))
                 * ((s * sxy - sx * sy) / (s * sxx - sx * sx)) * sx
             + pow((s * sxy - sx * sy) / (s * sxx - sx * sx), 2) * sxx) / greatest(n - 2, 1),
            1.0
        ) AS chi2
    FROM pass1
    WHERE n >= 3 AND s * sxx - sx * sx > 0
),
kept AS (
    SELECT p.object_id, p.x, p.y, p.w, p.y - f.v - f.bv * p.x AS r
    FROM points AS p
    JOIN fit1 AS f USING (object_id)
    WHERE abs(p.y - f.v - f.bv * p.x) * sqrt(p.w) <= $clip * sqrt(f.chi2)
),
pass2 AS (
    SELECT
        object_id, count(*) AS n, sum(w) AS s, sum(w * x) AS sx, sum(w * y) AS sy,
        sum(w * x * x) AS sxx, sum(w * x * y) AS sxy, sum(w * y * y) AS syy,
        stddev_samp(r) AS rms
    FROM kept
    GROUP BY object_id
)
SELECT
    p.object_id, p.n, p.s, p.sx, p.sy, p.sxx, p.sxy, p.syy, p.rms,
    sqrt(greatest(p.sxx / p.s - pow(p.sx / p.s, 2), 0)) AS c_spread,
    a.n - p.n AS n_clipped
FROM pass2 AS p
JOIN pass1 AS a USING (object_id);
