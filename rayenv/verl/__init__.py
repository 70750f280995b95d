"""rayenv for verl: the agent loop, GRPO without failed samples, a dataset builder and the smoke run.

The episode itself (driver, parsers, messages, settings, the ARPO-compatible worker) is
trainer-agnostic and lives in :mod:`rayenv.rollout`. :mod:`rayenv.verl.dataset` needs no verl;
:mod:`rayenv.verl.agent_loop` imports verl (the trainer virtualenv, ``scripts/verl-venv.sh``).
Nothing here imports desktop-env: the desktops run in the env host's virtualenv, behind Ray.
"""
