-- lightcurve_position_empty.sql: the (empty) result of a light curve outside the data.
SELECT frame_id, mjd, filter, channel, object_id, ra, dec, x, y, mag_instr, mag_err, z0, mag, flags,
       frame_status, 0.0 AS sep_arcsec
FROM lightcurves
WHERE false;
