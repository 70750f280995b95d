"""One episode on a leased pool desktop, for any trainer: the driver, reply parsers, messages, ARPO's worker.

:mod:`rayenv.rollout.episode` holds :class:`~rayenv.rollout.episode.Episode` (every env call awaited
with a timeout, failures typed) and its per-reply driver ``Episode.act(reply) -> Turn``, the one
place a model's reply becomes desktop steps. :mod:`~rayenv.rollout.parsers` turns replies into
actions, :mod:`~rayenv.rollout.messages` builds the chat history, :mod:`~rayenv.rollout.settings`
is the ``rayenv.agent`` section, :mod:`~rayenv.rollout.arpo` is the ARPO-compatible env worker.
The verl agent loop (:mod:`rayenv.verl.agent_loop`) and the sidecar's old-bridge endpoints
(:mod:`rayenv.ops.bridge`) wrap these. Nothing here imports verl, torch or desktop-env: the trainer's
light install has all of it.
"""
