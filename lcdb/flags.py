"""Measurement and pixel flag bits (docs/formats.md §4; the first five are Mini-SiTian's)."""

from __future__ import annotations

from enum import IntFlag


class Flag(IntFlag):
    """Bit mask carried by every measurement and every mask pixel."""

    BAD_PIXEL = 1
    SATURATED = 2
    SALT_PEPPER = 4
    TRACK = 8
    COSMIC_RAY = 16
    BAD_BACKGROUND = 32
    LARGE_OBJECT = 64
    TRUNCATED = 128
    BLENDED = 256
    OTHER = 512


#: Flags that make a measurement unusable (calibration, colours, statistics): every bit but
#: SALT_PEPPER, which a few % of CMOS pixels carry, so most apertures would otherwise be lost.
#: The SQL macro ``good_flags`` of sql/views.sql applies the same mask (1019).
REJECT = Flag(0x3FF) & ~Flag.SALT_PEPPER
