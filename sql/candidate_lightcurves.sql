-- candidate_lightcurves.sql: good calibrated points of the given objects, for the period search.
-- Same magnitude and selection as varstats.sql. Parameters: $ids (BIGINT[]), $max_point_err.
SELECT
    m.object_id,
    f.mjd,
    -2.5 * log10(m.flux) - z0_at(f.z0_coeffs, m.x, m.y, f.naxis1, f.naxis2)
        - f.color_coeff * coalesce(o.bv, 0.0) AS mag,
    1.0857362047581294 * m.flux_err / m.flux AS err
FROM measurements AS m
JOIN frames AS f USING (frame_id)
JOIN objects AS o USING (object_id)
WHERE m.object_id IN (SELECT unnest($ids))
  AND f.status = 'ok' AND good_flags(m.flags) AND m.flux > 0
  AND 1.0857362047581294 * m.flux_err / m.flux <= $max_point_err
ORDER BY m.object_id, f.mjd;
