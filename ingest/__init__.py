"""Reduction of raw frames and loading of per-frame catalogues into an lcdb store."""

from ingest.catalog import FrameCatalog, read_catalog
from ingest.load import IngestOptions, IngestSummary, ingest_paths
from ingest.refcat import RefcatOptions, load_refcat

__all__ = [
    "FrameCatalog",
    "IngestOptions",
    "IngestSummary",
    "RefcatOptions",
    "ingest_paths",
    "load_refcat",
    "read_catalog",
]
