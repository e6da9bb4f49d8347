-- colours_vs_refcat.sql: reconstructed V and B-V of objects against their reference-catalogue
-- values (seed Fig. 5), for `lcdb plot colours`. Only objects with both reconstructed values and a
-- catalogue star with both values; blended catalogue stars are flagged for the caller to drop.
SELECT
    o.object_id, o.v, o.v_err, o.bv, o.bv_err, o.n_colour,
    r.v AS v_cat, r.bv AS bv_cat, r.blended
FROM objects AS o
JOIN refcat AS r ON r.ref_id = o.ref_id
WHERE o.v IS NOT NULL AND o.bv IS NOT NULL AND r.v IS NOT NULL AND r.bv IS NOT NULL
ORDER BY o.object_id;
