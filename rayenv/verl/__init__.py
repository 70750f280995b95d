"""rayenv for verl: an agent loop, an ARPO-compatible env worker, action parsers and a dataset builder.

Import the piece you need: :mod:`rayenv.verl.parsers` and :mod:`rayenv.verl.dataset` need no verl;
:mod:`rayenv.verl.agent_loop` imports verl (the trainer virtualenv, ``scripts/verl-venv.sh``).
Nothing here imports desktop-env: the desktops run in the env host's virtualenv, behind Ray.
"""
