-- magnitudes.sql: per-object V with B-V held at its reconstructed value (`lcdb refine`).
--
-- y = instrumental - z0 - C_frame (B - V)_object is V plus noise on every good measurement; the
-- weighted mean gives V, in two passes (the second drops points beyond $clip normalised
-- residuals of the first, scaled by its reduced chi2). Streaming aggregates only.
-- Parameters: $floor (mag, added in quadrature to each error), $max_err (mag), $clip.
WITH
points AS (
    SELECT
        m.object_id,
        -2.5 * log10(m.flux) - z0_at(f.z0_coeffs, m.x, m.y, f.naxis1, f.naxis2)
            - f.color_coeff * o.bv AS y,
        1.0 / (pow(1.0857362047581294 * m.flux_err / m.flux, 2) + $floor * $floor) AS w
    FROM measurements AS m
    JOIN frames AS f USING (frame_id)
    JOIN objects AS o USING (object_id)
    WHERE f.status = 'ok' AND good_flags(m.flags) AND m.flux > 0 AND o.bv IS NOT NULL
      AND 1.0857362047581294 * m.flux_err / m.flux <= $max_err
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
)
SELECT
    k.object_id,
    count(*) AS n,
    sum(k.w * k.y) / sum(k.w) AS v,
    sqrt(1.0 / sum(k.w)) AS v_err_stat,
    (sum(k.w * k.y * k.y) - pow(sum(k.w * k.y), 2) / sum(k.w)) / greatest(count(*) - 1, 1)
        AS chi2,
    stddev_samp(k.y) AS rms,
    any_value(a.n) - count(*) AS n_clipped
FROM kept AS k
JOIN pass1 AS a USING (object_id)
GROUP BY k.object_id;
