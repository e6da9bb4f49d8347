-- lightcurve_object.sql: the light curve of one object, in time order.
-- Parameters: $object_id.
SELECT *
FROM lightcurves
WHERE object_id = $object_id
ORDER BY mjd;
