"""Checks anyone can run on the source tree (``python -m rayenv.tools.layers``)."""
