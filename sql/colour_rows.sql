-- colour_rows.sql: the rows a unit of the compiled colour fit reads (variability/colourfit.py).
--
-- Every good measurement (unflagged but for bit 4, positive flux) of the objects lo .. hi in the
-- given files, with what seed Eq. 1 needs per measurement; the kernel looks up the frame models,
-- drops rows with errors above max_err, and fits. The files are sorted by object, so rows come in
-- runs of one object and the id range prunes the neighbours' row groups.
-- Parameters: $files, $lo, $hi.
SELECT object_id, frame_id, x, y, flux, flux_err
FROM read_parquet($files)
WHERE object_id BETWEEN $lo AND $hi AND good_flags(flags) AND flux > 0
