-- lightcurve_object.sql: the light curve of one object, in time order.
-- Reads only the files that can hold the object's detections ($files: its partition, given by
-- object_id >> 2 (29 - order), and the neighbours for detections across a border); the files are
-- sorted by object, so row-group statistics skip all but the object's rows.
-- Parameters: $files, $object_files (the objects files of its partition), $object_id.
WITH
rows AS (
    SELECT *
    FROM read_parquet($files)
    WHERE object_id = $object_id
)
SELECT
    r.object_id, r.frame_id, f.mjd, f.filter, f.channel, r.ra, r.dec, r.x, r.y,
    CASE WHEN r.flux > 0 THEN -2.5 * log10(r.flux) END AS mag_instr,
    CASE WHEN r.flux > 0 THEN 1.0857362047581294 * r.flux_err / r.flux END AS mag_err,
    z0_at(f.z0_coeffs, r.x, r.y, f.naxis1, f.naxis2) AS z0,
    f.color_coeff,
    -2.5 * log10(r.flux) - z0_at(f.z0_coeffs, r.x, r.y, f.naxis1, f.naxis2)
        - f.color_coeff * o.bv AS mag,
    r.flags, f.status AS frame_status
FROM rows AS r
JOIN frames AS f USING (frame_id)
LEFT JOIN (
    SELECT object_id, bv FROM read_parquet($object_files) WHERE object_id = $object_id
) AS o USING (object_id)
ORDER BY f.mjd;
