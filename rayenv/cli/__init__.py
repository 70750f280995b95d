"""The ``rayenv`` command line (typer)."""
