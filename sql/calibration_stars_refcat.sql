-- calibration_stars_refcat.sql: reference stars measured on every frame, for `lcdb calibrate`.
-- A measurement qualifies when its object is tied to a refcat star with a B-V, the star is not
-- blended in the catalogue, and the measurement's flags are good (not saturated, not truncated,
-- no masked pixel, not blended on the frame; see good_flags in views.sql). Unordered: the job
-- streams the rows into chunks of frames (a sort of 10^7-10^8 rows took DuckDB's whole memory).
WITH
matched AS (
    SELECT m.frame_id, m.x, m.y, m.flux, m.flux_err, o.ref_id
    FROM measurements AS m
    JOIN objects AS o USING (object_id)
    WHERE good_flags(m.flags) AND m.flux > 0 AND o.ref_id IS NOT NULL
),
with_catalogue AS (
    SELECT
        t.frame_id, t.x, t.y,
        -2.5 * log10(t.flux) AS mag,
        1.0857362047581294 * t.flux_err / t.flux AS mag_err,
        r.v, r.v_err, r.bv
    FROM matched AS t
    JOIN refcat AS r USING (ref_id)
    WHERE NOT r.blended AND r.bv IS NOT NULL AND r.v IS NOT NULL
)
SELECT * FROM with_catalogue;
