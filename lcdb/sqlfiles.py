"""Access to the named SQL files of ``sql/`` (installed as package data ``lcdb.sql``)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    return resources.files("lcdb.sql").joinpath(f"{name}.sql").read_text()
