-- varstats.sql: per-object variability statistics over good, calibrated measurements.
--
-- Calibrated magnitude: instrumental - z0 - C (B-V) (B-V taken as 0 where no colour was
-- reconstructed: only the frame-to-frame part of C (B-V) matters for scatter). Good: frame
-- calibrated ('ok'), no flag, error at most $max_point_err. Objects are kept when their median
-- error is at most $max_err and they have at least $min_n points: selecting objects, not points,
-- by error keeps the faint phases of a variable (a deep eclipse has large errors) while objects
-- at the detection limit, whose light curves are truncated, stay out. The errors do not depend
-- on the calibration, so objects are selected first (CTE kept) and the zero point is evaluated
-- and the statistics computed only on their rows (bench/findvars.py's survey: 60% of the rows,
-- ~20% less time). Z0 is sql/views.sql's z0_horner on the frame models materialised once (~20%
-- less time than z0_at's list dot product). The indices follow Sokolovsky et al. (2017):
-- weighted mean, standard deviation, robust sigma (1.4826 MAD), reduced chi2 about the weighted
-- mean, interquartile range, von Neumann ratio eta (consecutive differences in time over the
-- variance), Stetson J (consecutive pairs in time)
-- and K (residuals from the weighted mean, as Stetson 1996 and the light-curve package define
-- them; the plain mean gave K up to 0.4 lower for variables whose faint phases have large
-- errors), amplitude (5th-95th percentile) and time span. Quantiles are DuckDB's streaming
-- t-digest (approx_quantile, one digest per object for all five): 2.5x faster than exact ones at
-- 10^7 rows, agreeing to ~1%; on light curves of up to ~100 points they equal the Hazen
-- quantiles (the light-curve package's) to float precision (bench/findvars.py). det_mag, the mean
-- magnitude through the zero point at the frame centre only (vignetting included), is what the
-- noise depends on.
-- Runs on the objects of one partition at a time (lcdb find-variables is a partition job): $files
-- are the measurement files that can hold their detections (the partition and its neighbours) and
-- [$lo, $hi] their object ids (an object's id range is its partition's order-29 index range; the
-- files are sorted by object, so row groups outside it are skipped).
-- Parameters: $files, $lo, $hi, $z0_order (the highest order of the frames' Z0 models),
-- $max_err, $max_point_err, $min_n.
WITH
frame_models AS MATERIALIZED (
    SELECT * FROM _frame_models WHERE status = 'ok'
),
good AS (
    SELECT
        m.object_id,
        m.frame_id,
        m.x::DOUBLE AS x,
        m.y::DOUBLE AS y,
        m.flux,
        1.0857362047581294 * m.flux_err / m.flux AS err
    FROM read_parquet($files) AS m
    SEMI JOIN frame_models AS f ON f.frame_id = m.frame_id
    WHERE m.object_id BETWEEN $lo AND $hi
      AND good_flags(m.flags) AND m.flux > 0
      AND 1.0857362047581294 * m.flux_err / m.flux <= $max_point_err
),
kept AS (
    SELECT object_id
    FROM good
    GROUP BY object_id
    HAVING count(*) >= $min_n AND median(err) <= $max_err
),
points AS (
    SELECT
        g.object_id,
        f.mjd,
        -2.5 * log10(g.flux)
            - z0_horner(
                f, 2.0 * g.x / (f.naxis1 - 1) - 1.0, 2.0 * g.y / (f.naxis2 - 1) - 1.0, $z0_order
            )
            - f.color_coeff * coalesce(o.bv, 0.0) AS mag,
        -- what sets the noise: the brightness on the detector, i.e. the magnitude through the
        -- frame's zero point at its centre (transparency) but not through the vignetting
        -2.5 * log10(g.flux) - f.c0 - f.color_coeff * coalesce(o.bv, 0.0) AS mag_det,
        g.err
    FROM good AS g
    SEMI JOIN kept USING (object_id)
    JOIN frame_models AS f USING (frame_id)
    JOIN objects AS o USING (object_id)
),
moments AS (
    SELECT
        object_id,
        count(*) AS n,
        avg(mag) AS mean_mag,
        avg(mag_det) AS det_mag,
        sum(mag / (err * err)) / sum(1.0 / (err * err)) AS wmean,
        avg(err) AS mean_err,
        stddev_samp(mag) AS std,
        approx_quantile(mag, [0.05, 0.25, 0.5, 0.75, 0.95]) AS q,
        max(mjd) - min(mjd) AS time_span
    FROM points
    GROUP BY object_id
),
deviations AS (
    SELECT
        p.object_id,
        p.mjd,
        p.mag,
        abs(p.mag - m.q[3]) AS absdev,
        (p.mag - m.wmean) / p.err AS z,
        sqrt(m.n / (m.n - 1.0)) * (p.mag - m.wmean) / p.err AS delta
    FROM points AS p
    JOIN moments AS m USING (object_id)
),
ordered AS (
    SELECT
        *,
        lead(mag) OVER w AS mag_next,
        lead(delta) OVER w AS delta_next
    FROM deviations
    WINDOW w AS (PARTITION BY object_id ORDER BY mjd)
),
indices AS (
    SELECT
        object_id,
        1.4826 * approx_quantile(absdev, 0.5) AS mad_sigma,
        sum(z * z) / (count(*) - 1) AS chi2_red,
        sum(pow(mag_next - mag, 2)) AS dsum,
        avg(sign(delta * delta_next) * sqrt(abs(delta * delta_next))) AS stetson_j,
        avg(abs(delta)) / sqrt(avg(delta * delta)) AS stetson_k
    FROM ordered
    GROUP BY object_id
)
SELECT
    m.object_id,
    m.n::INTEGER AS n,
    m.mean_mag,
    m.det_mag,
    m.wmean AS wmean_mag,
    m.mean_err::FLOAT AS mean_err,
    m.std::FLOAT AS std,
    i.mad_sigma::FLOAT AS mad_sigma,
    i.chi2_red::FLOAT AS chi2_red,
    (m.q[4] - m.q[2])::FLOAT AS iqr,
    (i.dsum / ((m.n - 1) * m.std * m.std))::FLOAT AS eta,
    i.stetson_j::FLOAT AS stetson_j,
    i.stetson_k::FLOAT AS stetson_k,
    (m.q[5] - m.q[1])::FLOAT AS amplitude,
    m.time_span::FLOAT AS time_span
FROM moments AS m
JOIN indices AS i USING (object_id)
ORDER BY m.object_id;
