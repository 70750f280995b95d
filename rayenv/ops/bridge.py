"""The old bridge's ``/env/*`` endpoints, served by the sidecar from a pool desktop, for migration.

Trainers of the HTTP-bridge era call ``POST /env/reset {"task_config"}``, ``POST /env/step
{"prediction"}``, ``POST /env/evaluate`` and ``/env/history_messages`` on one URL that wraps one
desktop. These endpoints keep that client working unchanged while the env host already runs
rayenv: behind them sits one :class:`~rayenv.rollout.arpo.ARPOEnvWorker` (the same method names and
reply shapes, base64 images in the messages), which leases a desktop from the pool at reset and
gives it back after evaluate. One caller at a time, as before; move to Ray calls for more.

What changed on purpose: an evaluation that cannot score answers HTTP 502 with the reason instead
of a 0.0 score, and an env failure during reset/step is reported under ``env_error``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel


class ResetRequest(BaseModel):
    task_config: dict[str, Any]


class StepRequest(BaseModel):
    prediction: str


class Score(BaseModel):
    score: float


def bridge_router(connect: Callable[[], Any], pool: str, namespace: str) -> APIRouter:
    """``connect()`` returns the ``ray`` module once connected (the sidecar's lazy Ray connection)."""
    router = APIRouter(prefix="/env", tags=["old bridge (migration)"])
    lock = threading.Lock()
    worker: list[Any] = []  # the one ARPO-style worker, created at the first reset

    def call(method: str, *args: Any) -> Any:
        ray = connect()
        from ..rollout.arpo import ARPOEnvWorker

        with lock:
            if not worker:
                worker.append(ARPOEnvWorker.options(num_cpus=0).remote(0, pool=pool, namespace=namespace))
            try:
                return ray.get(getattr(worker[0], method).remote(*args))
            except ray.exceptions.RayTaskError as exc:
                raise HTTPException(502, detail=str(exc.cause if exc.cause is not None else exc)) from None

    @router.post("/reset")
    def reset(request: ResetRequest) -> dict[str, Any]:
        return call("reset", request.task_config)

    @router.post("/step")
    def step(request: StepRequest) -> dict[str, Any]:
        return call("step", request.prediction)

    @router.post("/evaluate", response_model=Score)
    def evaluate() -> Score:
        return Score(score=call("evaluate"))

    @router.api_route("/history_messages", methods=["GET", "POST"])
    def history_messages() -> list[dict[str, Any]]:
        return call("get_history_messages")

    return router
