-- export_objects.sql: objects with their variability statistics (null until `lcdb find-variables`),
-- for `lcdb export objects`; the caller keeps the varstats columns only when asked.
-- Parameters: $min_obs (fewest measurements), $with_colours (BOOLEAN: only objects with V and B-V).
SELECT o.* EXCLUDE (pixel), s.* EXCLUDE (object_id, pixel)
FROM objects AS o
LEFT JOIN varstats AS s ON s.object_id = o.object_id
WHERE o.n_obs >= $min_obs
  AND (NOT $with_colours OR (o.v IS NOT NULL AND o.bv IS NOT NULL))
ORDER BY o.object_id;
