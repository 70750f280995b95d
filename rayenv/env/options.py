"""Per-desktop options, apart from the desktop itself so a pool's config can name them without
importing the desktop stack (providers, evaluators)."""

from __future__ import annotations

from pydantic import Field

from ..strict import StrictModel


class EnvOptions(StrictModel):
    """Per-desktop behaviour: what an observation holds and how long each phase may take."""

    require_a11y_tree: bool = Field(False, description="fetch the accessibility tree with every observation")
    require_terminal: bool = Field(False, description="fetch terminal output with every observation")
    step_timeout: float = Field(60.0, gt=0, description="seconds one action may run inside the desktop")
    setup_timeout: float = Field(300.0, gt=0, description="seconds a task's setup steps may take")
    evaluate_timeout: float = Field(300.0, gt=0, description="seconds an evaluation may take")
    observe_timeout: float = Field(30.0, gt=0, description="seconds to fetch one observation")
    default_pause: float = Field(0.5, ge=0, description="seconds to wait after an action before observing")
    min_free_mb: float = Field(16.0, ge=0, description="free space a task needs in the desktop's home and tmp, checked "
                               "with a write before setup and around evaluation; a desktop short of it is replaced")
    per_desktop_metrics: bool = Field(False, description="tag each env call metric with its desktop as well as its env "
                                      "host: one series per desktop and phase, which a fleet's Prometheus may not afford")
    download_cache: str | None = Field(None, description="the host's cache of files tasks download (setup inputs, gold "
                                       "files), filled by `rayenv suite prefetch`; default $RAYENV_DOWNLOAD_CACHE or "
                                       "~/.cache/rayenv/downloads")
    record_dir: str | None = Field(None, description="write screenshots, actions and scores of every episode here")
