"""Store configuration: ``STORE/lcdb.toml`` as a frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from lcdb.errors import StoreError

#: Version of the on-disk layout and table schemas this lcdb writes. A store with a newer
#: version is refused (an older lcdb must not corrupt what it does not understand).
SCHEMA_VERSION = 1

CONFIG_NAME = "lcdb.toml"


@dataclass(frozen=True)
class StoreConfig:
    """Parameters of one store, written once by ``lcdb init`` and read by every job.

    Parameters
    ----------
    order : int
        Nested HEALPix order of the partitions. Order 5 (1.8 deg pixels, 12288 on the sky) keeps a
        10x10 deg Mini-MegaTORTORA frame in ~40 partitions and a Mini-SiTian field in 1-4; see
        docs/architecture.md for the benchmark behind the default.
    match_radius_arcsec : float
        Radius for matching measurements to each other and to the reference catalogue.
    z0_order : int
        Order of the Z0(x, y) polynomial of the frame photometric model (seed Eq. 1: 4).
    blend_radius_arcsec, blend_dmag : float
        A refcat star is ``blended`` when another star within ``blend_radius_arcsec`` is
        brighter than its own V + ``blend_dmag``.
    batch_frames : int
        Frames per ingest batch: each batch writes one file per touched partition.
    refine_tolerance_mag : float
        Refinement stops when V, B-V and frame zero points change by less than this.
    schema_version : int
        Layout version of the store (``SCHEMA_VERSION`` when created).
    """

    order: int = 5
    match_radius_arcsec: float = 30.0
    z0_order: int = 4
    blend_radius_arcsec: float = 60.0
    blend_dmag: float = 2.0
    batch_frames: int = 200
    refine_tolerance_mag: float = 0.002
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.order, int) and 0 <= self.order <= 12):
            problems.append(f"order must be an integer in 0..12, got {self.order!r}")
        if not self.match_radius_arcsec > 0:
            problems.append(f"match_radius_arcsec must be > 0, got {self.match_radius_arcsec!r}")
        if not (isinstance(self.z0_order, int) and 0 <= self.z0_order <= 6):
            problems.append(f"z0_order must be an integer in 0..6, got {self.z0_order!r}")
        if not self.blend_radius_arcsec >= 0:
            problems.append(f"blend_radius_arcsec must be >= 0, got {self.blend_radius_arcsec!r}")
        if not (isinstance(self.batch_frames, int) and self.batch_frames >= 1):
            problems.append(f"batch_frames must be an integer >= 1, got {self.batch_frames!r}")
        if not self.refine_tolerance_mag > 0:
            problems.append(f"refine_tolerance_mag must be > 0, got {self.refine_tolerance_mag!r}")
        if not (isinstance(self.schema_version, int) and self.schema_version >= 1):
            problems.append(f"schema_version must be an integer >= 1, got {self.schema_version!r}")
        if problems:
            raise StoreError("invalid store configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain TOML-serialisable values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> StoreConfig:
        """Build from a mapping, naming unknown keys instead of ignoring them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StoreError(f"{source}: unknown key(s) {', '.join(unknown)}")
        return cls(**values)


def write_config(root: Path, config: StoreConfig) -> None:
    """Write ``lcdb.toml`` atomically."""
    from lcdb.atomic import atomic_write_bytes

    text = "# lcdb store configuration (see docs/formats.md)\n" + tomli_w.dumps(config.to_dict())
    atomic_write_bytes(root / CONFIG_NAME, text.encode())


def read_config(root: Path) -> StoreConfig:
    """Read and validate ``STORE/lcdb.toml``; refuse stores of a newer schema version."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise StoreError(
            f"{root}: not an lcdb store (no {CONFIG_NAME}); create one with `lcdb init`"
        )
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable configuration ({exc})") from exc
    version = values.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StoreError(
            f"{root}: store schema version {version} is newer than this lcdb supports "
            f"({SCHEMA_VERSION}); upgrade lcdb"
        )
    return StoreConfig.from_dict(values, source=str(path))
