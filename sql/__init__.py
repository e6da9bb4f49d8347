"""SQL shipped with lcdb (installed as the package ``lcdb.sql``); loaded by :mod:`lcdb.sqlfiles`."""
