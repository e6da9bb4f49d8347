-- export_lightcurves.sql: the light curves of a list of objects, for `lcdb export` and `lcdb plot`.
-- Good points are those of accepted frames whose flags are good (frame_status = 'ok',
-- good_flags(flags): no bit but the informational salt-and-pepper one);
-- $all keeps every measurement. `mag` is the calibrated V of seed Eq. 1 (null until the object has
-- a colour), `mag_err` the photometric error of `mag_instr` (the calibration's error not included).
-- Parameters: $ids (object ids), $all (BOOLEAN).
SELECT
    object_id, frame_id, mjd, filter, channel, mag, mag_err, mag_instr, z0, flags, frame_status
FROM lightcurves
WHERE object_id IN (SELECT unnest($ids::BIGINT[]))
  AND ($all OR (frame_status = 'ok' AND good_flags(flags)))
ORDER BY object_id, mjd, frame_id;
