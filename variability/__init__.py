"""Frame calibration, clustering, colour reconstruction, refinement and variability search."""
