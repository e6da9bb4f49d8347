-- lightcurve_object.sql: the measurements of one object with their frames and its colour.
-- Reads only the files that can hold the object's detections ($files: its partition, given by
-- object_id >> 2 (29 - order), and the neighbours for detections across a border); the files are
-- sorted by object, so row-group statistics skip all but the object's rows. Store.lightcurve_by_
-- object evaluates z0 and the calibrated magnitude in numpy.
-- Parameters: $files, $object_files (the objects files of its partition), $object_id.
SELECT
    r.object_id, r.frame_id, f.mjd, f.filter, f.channel, r.ra, r.dec, r.x, r.y, r.flux,
    r.flux_err, r.flags, f.z0_coeffs, f.naxis1, f.naxis2, f.color_coeff, f.status AS frame_status,
    o.bv
FROM read_parquet($files) AS r
JOIN frames AS f USING (frame_id)
LEFT JOIN (
    SELECT object_id, bv FROM read_parquet($object_files) WHERE object_id = $object_id
) AS o USING (object_id)
WHERE r.object_id = $object_id;
