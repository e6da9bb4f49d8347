"""Subcommands of the ``lcdb`` CLI, one module per group; each defines ``register(subparsers)``."""
