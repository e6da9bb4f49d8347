"""lcdb: a light-curve database and variability search for wide-field sky surveys."""

from lcdb.config import SCHEMA_VERSION, StoreConfig
from lcdb.errors import InputError, LcdbError, StoreError, UsageError
from lcdb.flags import Flag
from lcdb.store import Store, init_store
from lcdb.store import open_store as open

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Flag",
    "InputError",
    "LcdbError",
    "Store",
    "StoreConfig",
    "StoreError",
    "UsageError",
    "__version__",
    "init_store",
    "open",
]
