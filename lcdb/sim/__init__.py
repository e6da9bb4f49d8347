"""Simulators: a catalogue-level survey simulator and a pixel-level frame simulator.

The survey simulator (:func:`simulate_survey`) writes per-frame catalogues in the format of
docs/formats.md, the field's reference catalogue and the full truth; see
:mod:`lcdb.sim.survey` for the instrumental flux identity its truth obeys.
"""

from lcdb.sim.camera import PRESETS, Camera, get_preset
from lcdb.sim.noise import expected_mag_error, limiting_mag, noise_budget, saturation_mag
from lcdb.sim.sky import stars_from_refcat, synthetic_stars
from lcdb.sim.survey import (
    SurveyConfig,
    SurveyResult,
    evaluate_z0,
    frame_wcs,
    normalise_xy,
    simulate_survey,
    z0_terms,
)
from lcdb.sim.variables import VAR_TYPES, magnitude_offset

__all__ = [
    "PRESETS",
    "VAR_TYPES",
    "Camera",
    "SurveyConfig",
    "SurveyResult",
    "evaluate_z0",
    "expected_mag_error",
    "frame_wcs",
    "get_preset",
    "limiting_mag",
    "magnitude_offset",
    "noise_budget",
    "normalise_xy",
    "saturation_mag",
    "simulate_survey",
    "stars_from_refcat",
    "synthetic_stars",
    "z0_terms",
]
