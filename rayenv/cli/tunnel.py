"""``rayenv tunnel``: now defined in :mod:`rayenv.cli.cluster` (``main.py`` still imports this name)."""

from .cluster import tunnel_app as app

__all__ = ["app"]
