-- object_positions.sql: detections and mean position of every clustered object (`lcdb cluster`).
--
-- One row per object: n (its detections), the means of ra and dec, and what a wrap-aware mean
-- needs: the ra span with ra shifted to -180..180 (an object straddling ra = 0/360 averages the
-- shifted values) and, within 10 deg of a pole, the sums of the unit vectors and their count
-- (an ra offset is not small there; an object with rows on both sides of 80 deg keeps the
-- plain means, exact to second order there); the trigonometry runs on those rows only. Python
-- picks the mean per object (variability/assign.py, _mean_positions). No parameters.
SELECT
    object_id,
    count(*)::INTEGER AS n,
    avg(ra) AS ra_mean,
    avg(dec) AS dec_mean,
    max(ra) - min(ra) AS ra_span,
    avg(CASE WHEN ra > 180 THEN ra - 360 ELSE ra END) AS ra_w,
    sum(CASE WHEN abs(dec) > 80 THEN cos(radians(dec)) * cos(radians(ra)) END) AS ux,
    sum(CASE WHEN abs(dec) > 80 THEN cos(radians(dec)) * sin(radians(ra)) END) AS uy,
    sum(CASE WHEN abs(dec) > 80 THEN sin(radians(dec)) END) AS uz,
    count(*) FILTER (WHERE abs(dec) > 80) AS n_polar
FROM measurements
WHERE object_id IS NOT NULL
GROUP BY object_id;
