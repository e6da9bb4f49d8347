-- calibration_stars_objects.sql: measurements of the reconstructed reference objects (constant,
-- well-measured objects chosen by `lcdb refine`) on every frame, unflagged. Ordered by frame.
WITH
matched AS (
    SELECT m.frame_id, m.x, m.y, m.flux, m.flux_err, o.v, o.v_err, o.bv
    FROM measurements AS m
    JOIN objects AS o USING (object_id)
    WHERE m.flags = 0 AND m.flux > 0 AND o.reference
      AND o.v IS NOT NULL AND o.bv IS NOT NULL
)
SELECT
    frame_id, x, y,
    -2.5 * log10(flux) AS mag,
    1.0857362047581294 * flux_err / flux AS mag_err,
    v, v_err, bv
FROM matched
ORDER BY frame_id;
