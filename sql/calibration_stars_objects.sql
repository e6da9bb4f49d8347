-- calibration_stars_objects.sql: measurements of the reconstructed reference objects (constant,
-- well-measured objects chosen by `lcdb refine`) on every frame, unflagged, with the frame's
-- current colour coefficient (refinement keeps C from the refcat calibration). Unordered: the
-- job streams the rows into chunks of frames (a sort of 10^7-10^8 rows took DuckDB's whole memory).
WITH
matched AS (
    SELECT m.frame_id, m.x, m.y, m.flux, m.flux_err, o.v, o.v_err, o.bv, o.bv_err
    FROM measurements AS m
    JOIN objects AS o USING (object_id)
    WHERE good_flags(m.flags) AND m.flux > 0 AND o.reference
      AND o.v IS NOT NULL AND o.bv IS NOT NULL
)
SELECT
    t.frame_id, t.x, t.y,
    -2.5 * log10(t.flux) AS mag,
    1.0857362047581294 * t.flux_err / t.flux AS mag_err,
    t.v,
    -- the reference value is V + C (B-V): its error includes C times the B-V error
    sqrt(pow(coalesce(t.v_err, 0), 2) + pow(f.color_coeff * coalesce(t.bv_err, 0), 2)) AS v_err,
    t.bv,
    f.color_coeff AS c_fixed, f.color_coeff_err AS c_fixed_err
FROM matched AS t
JOIN frames AS f USING (frame_id)
WHERE f.color_coeff IS NOT NULL;
