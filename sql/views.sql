-- views.sql: the public views and macros of an lcdb store.
--
-- lcdb.store registers the base relations _frames, _measurements, _refcat, _objects and
-- _candidates (Parquet files listed by the store's manifest, hive column `pixel`) and the scalar
-- function lcdb_cone_pixels(ra, dec, radius_deg) -> BIGINT[] (partitions overlapping a cone);
-- this file defines everything users query on top of them.

-- One row per frame (docs/formats.md §3).
CREATE OR REPLACE TEMP VIEW frames AS
SELECT * FROM _frames;

-- Per-frame photometry, with instrumental magnitudes derived from the stored ADU/s fluxes.
CREATE OR REPLACE TEMP VIEW measurements AS
SELECT
    *,
    CASE WHEN flux > 0 THEN -2.5 * log10(flux) END AS mag_instr,
    CASE WHEN flux > 0 THEN 1.0857362047581294 * flux_err / flux END AS mag_err
FROM _measurements;

CREATE OR REPLACE TEMP VIEW refcat AS
SELECT * FROM _refcat;

CREATE OR REPLACE TEMP VIEW objects AS
SELECT * FROM _objects;

CREATE OR REPLACE TEMP VIEW candidates AS
SELECT * FROM _candidates;

-- Light curves: measurements with their frame's time and filter and, once `lcdb calibrate` and
-- `lcdb colours` have run, the calibrated magnitude of seed Eq. 1 solved for V:
-- V = instrumental - Z0(x, y) - C_frame * (B - V)_object.
CREATE OR REPLACE TEMP VIEW lightcurves AS
SELECT
    m.object_id,
    m.frame_id,
    f.mjd,
    f.filter,
    f.channel,
    m.ra,
    m.dec,
    m.x,
    m.y,
    m.mag_instr,
    m.mag_err,
    m.z0,
    m.mag_instr - m.z0 - coalesce(f.color_coeff * o.bv, 0.0) AS mag,
    m.flags,
    f.status AS frame_status,
    m.pixel,
    m.healpix_29
FROM measurements AS m
JOIN frames AS f USING (frame_id)
LEFT JOIN objects AS o USING (object_id);

-- Great-circle separation in degrees (haversine: accurate at arcsecond separations).
CREATE OR REPLACE TEMP MACRO ang_sep_deg(ra1, dec1, ra2, dec2) AS
    degrees(2 * asin(sqrt(least(1.0,
        pow(sin(radians(dec2 - dec1) / 2), 2)
        + cos(radians(dec1)) * cos(radians(dec2)) * pow(sin(radians(ra2 - ra1) / 2), 2)))));

-- Measurements within radius_deg of (ra0, dec0); only the overlapping partitions are read.
CREATE OR REPLACE TEMP MACRO cone_search(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM measurements
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;

-- Reference-catalogue stars within radius_deg of (ra0, dec0).
CREATE OR REPLACE TEMP MACRO refcat_cone(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM refcat
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;

-- Objects within radius_deg of (ra0, dec0).
CREATE OR REPLACE TEMP MACRO objects_cone(ra0, dec0, radius_deg) AS TABLE
SELECT *, ang_sep_deg(ra, dec, ra0, dec0) AS sep_deg
FROM objects
WHERE list_contains(lcdb_cone_pixels(ra0, dec0, radius_deg), pixel)
  AND ang_sep_deg(ra, dec, ra0, dec0) <= radius_deg;
