"""verl drives rayenv desktops (issue 5's acceptance), in one real two-virtualenv Ray cluster.

The head and the driver run from the trainer virtualenv (verl 0.9.1, numpy 2, no desktop-env;
``scripts/verl-venv.sh``); the desktops' node runs from the env-host virtualenv (desktop-env,
numpy 1) and alone advertises ``osworld_env``. Desktops are desktop-lite host processes.

verl's own ``AgentLoopWorker`` (a Ray actor on the head) runs our agent loop on rows that verl's
``RLHFDataset`` read from the parquet our dataset builder wrote. A scripted policy stands in for
the LLM server (``rayenv.verl.testing.ScriptedServer``) and a weightless model dir with a small
real BPE tokenizer stands in for the checkpoint: text-only (qwen2), and for the image path a
qwen2_vl one that verl loads as a real ``Qwen2VLProcessor`` with transformers' Qwen2-VL image
processor (videos aside: ``rayenv.verl.testing.ScreenshotsOnlyVideoProcessor``).

This file is also the driver: pytest (env-host venv) starts the cluster and runs
``<trainer python> tests/test_verl_e2e.py <scenario>``, which prints one JSON line to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "OSWorld" / "tasks"
NAMESPACE = "rayenv-verl-e2e"
POOL = "verl-e2e"
SOLVED, UNSOLVED = "mousepad-save-hello", "terminal-make-directory"
WRONG_ACTIONS = ["pyautogui.typewrite('mkdir -p ~/some-other-dir', interval=0.02); pyautogui.press('enter')", "DONE"]
SCREEN = (1024, 768)
MAX_PIXELS = 200_000  # 1024x768 -> 504x364 on Qwen's 28-pixel grid: 36 x 26 patches of 2x2 = 234 tokens
SEEN = (504, 364)
TOKENS_PER_SCREENSHOT = (SEEN[0] // 28) * (SEEN[1] // 28)
TIGHT_RESPONSE = 400  # room for the first observation, not the second


def trainer_python() -> Path:
    python = REPO / ".venv-verl" / "bin" / "python"
    if not python.exists():
        pytest.fail("the verl trainer virtualenv is missing: run scripts/verl-venv.sh")
    return python


def envhost_python() -> Path:
    for venv in (REPO / ".venv", Path.home() / ".cache" / "rayenv" / "envhost-warm"):
        python = venv / "bin" / "python"
        if python.exists() and subprocess.run([str(python), "-c", "import desktop_env"], capture_output=True).returncode == 0:
            return python
    pytest.fail("no env-host virtualenv with desktop-env: run scripts/bootstrap.sh")


# == the pytest side (env-host venv) ============================================================
pytestmark = [pytest.mark.slow, pytest.mark.verl]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from rayenv.tools.localcluster import ray_cluster

    trainer, envhost = trainer_python(), envhost_python()
    with ray_cluster(tmp_path_factory.mktemp("verl"), base_port=23400, head_python=str(trainer),
                     env_python=str(envhost), env_units=2, head_cpus=2) as running:
        work = tmp_path_factory.mktemp("verl-driver")
        results: dict[str, dict] = {}

        def run(scenario: str) -> dict:  # each scenario runs once, however many tests read it
            if scenario not in results:
                results[scenario] = drive(trainer, running, work, scenario)
            return results[scenario]

        run("setup")
        yield run
        drive(trainer, running, work, "teardown")


def drive(python: Path, cluster, work: Path, scenario: str) -> dict:
    env = {**cluster.env(), "RAYENV_E2E_WORK": str(work)}
    done = subprocess.run([str(python), __file__, scenario], capture_output=True, text=True, env=env, timeout=900,
                          cwd=REPO)
    assert done.returncode == 0, f"driver {scenario} failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_verl_agent_loop_worker_scores_a_solved_and_an_unsolved_task_with_osworld_evaluators(cluster):
    out = cluster("agent_loop")
    solved, unsolved = out["rows"][SOLVED], out["rows"][UNSOLVED]
    assert (solved["reward"], unsolved["reward"]) == (1.0, 0.0)
    assert not solved["env_failed"] and not unsolved["env_failed"]
    # 3 scripted actions + DONE: 4 model turns, 3 observations, plus the first prompt
    assert (solved["num_turns"], solved["ended_by"]) == (8, "DONE")
    assert (unsolved["num_turns"], unsolved["ended_by"]) == (4, "DONE")
    for row in (solved, unsolved):  # mask 1 exactly on the model's tokens, which decode to its replies
        assert row["masked_tokens"] == row["model_tokens"]
        assert row["masked_text"] == row["replies"]
        assert row["response_tokens"] > row["model_tokens"]  # observations are in the response, masked 0
    assert out["pool"]["leased"] == 0 and out["pool"]["healthy"] == 2


def test_arpo_compatible_worker_runs_the_same_scenario_through_arpos_method_names(cluster):
    out = cluster("arpo")
    assert out["scores"] == {SOLVED: 1.0, UNSOLVED: 0.0}
    assert out["first_reply_keys"] == ["env_error", "env_idx", "format_reward", "is_done", "obs_messages"]
    assert out["history_roles"][SOLVED] == ["system", "user"] + ["assistant", "user"] * 3 + ["assistant"]
    assert out["images"][SOLVED] == 4
    assert out["pool"]["leased"] == 0


def test_a_desktop_killed_mid_rollout_fails_its_sample_with_the_reason_and_the_other_row_completes(cluster):
    out = cluster("failure")
    victim, survivor = out["rows"][UNSOLVED], out["rows"][SOLVED]
    assert victim["env_failed"] and "DesktopUnavailable" in victim["env_error"], victim
    assert victim["masked_tokens"] == 0 and victim["ended_by"] == "env_failure"
    assert survivor["reward"] == 1.0 and not survivor["env_failed"]
    assert out["pool"]["leased"] == 0 and out["pool"]["replaced"] >= 1


def test_with_a_qwen2_vl_processor_each_screenshot_is_an_image_that_verls_postprocessing_accepts(cluster):
    row = cluster("images")["rows"]["full"]
    assert (row["reward"], row["ended_by"], row["env_failed"]) == (1.0, "DONE", False)
    assert row["images"] == 4  # the task's screenshot and one after each of the 3 actions
    assert row["vision_starts"] == row["images"]  # one image span per screenshot in prompt + response
    assert row["image_grid"] == [[1, SEEN[1] // 14, SEEN[0] // 14]] * row["images"]  # the processor got our resize
    assert row["image_pads"] == TOKENS_PER_SCREENSHOT * row["images"]
    assert row["position_ids"] == 4  # verl's M-RoPE positions (text + 3 vision axes) computed from those images
    assert row["masked_text"] == row["replies"]  # the model's tokens, and nothing of the images, carry the mask


def test_a_screenshot_that_does_not_fit_the_response_budget_ends_the_episode_uncut(cluster):
    row = cluster("images")["rows"]["tight"]
    assert row["ended_by"] == "response_length" and not row["env_failed"]
    assert row["images"] == 2  # the first prompt's and one observation; the next would not fit
    assert (row["vision_starts"], row["image_pads"]) == (2, 2 * TOKENS_PER_SCREENSHOT)
    assert row["response_tokens"] <= TIGHT_RESPONSE


# == the driver side (trainer venv) =============================================================
def _tasks() -> dict[str, dict]:
    from rayenv.env.tasks import load_tasks

    return {task["id"]: task for task in load_tasks(TASKS)}


def _scripts(tasks: dict[str, dict], unsolved_actions: list[str]) -> dict[str, list[str]]:
    from rayenv.verl.testing import pyautogui_script

    return {tasks[SOLVED]["instruction"]: pyautogui_script([*tasks[SOLVED]["rayenv_solution"], "DONE"]),
            tasks[UNSOLVED]["instruction"]: pyautogui_script(unsolved_actions)}


def _pool_counts(pool) -> dict:
    status = pool.status()
    states = [slot.state for slot in status.slots]
    return {"leased": states.count("leased"), "healthy": status.healthy,
            "replaced": sum(slot.replacements for slot in status.slots)}


def _verl_config(work: Path, model: Path, data: Path, extra: tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    overrides = [f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
                 "data.max_prompt_length=1024", "data.max_response_length=4096",
                 f"actor_rollout_ref.rollout.agent.agent_loop_config_path={REPO / 'configs' / 'agent_loop.yaml'}",
                 f"rayenv.pool.name={POOL}", f"rayenv.pool.namespace={NAMESPACE}", "rayenv.agent.parser=pyautogui",
                 "~rayenv.agent.parser_options", "rayenv.agent.max_turns=6", "rayenv.agent.step_timeout=60", *extra]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return compose(config_name="smoke_ray_env", overrides=overrides)


def _run_agent_loops(work: Path, scripts: dict[str, list[str]], during=None, *, task_ids=(SOLVED, UNSOLVED),
                     vision: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Build the dataset, then let verl's AgentLoopWorker run it; summarize each row (by task id)."""
    import ray
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.protocol import DataProto
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from rayenv.verl.dataset import build_rows, write_parquet
    from rayenv.verl.testing import ScriptedServer, build_tiny_model

    tasks = _tasks()
    model = build_tiny_model(work / ("model-vl" if vision else "model"), corpus=[t["instruction"] for t in tasks.values()],
                             vision=vision)
    data = write_parquet(build_rows([tasks[tid] for tid in task_ids]), work / "train.parquet")
    config = _verl_config(work, model, data, overrides)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    dataset = RLHFDataset(data_files=[str(data)], tokenizer=tokenizer, config=config.data, processor=None)
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in range(len(dataset))]))
    server = ScriptedServer(tokenizer, scripts)
    # a CPU: never the env host; for images, verl imports the video stand-in before it loads the processor
    env_vars = {"VERL_USE_EXTERNAL_MODULES": "rayenv.verl.testing"} if vision else {}
    worker = ray.remote(AgentLoopWorker).options(num_cpus=1, runtime_env={"env_vars": env_vars}).remote(config, server)
    ref = worker.generate_sequences.remote(batch)
    if during is not None:
        during()
    output = ray.get(ref, timeout=800)
    rows = {}
    for i in range(len(output)):
        info = {key: output.non_tensor_batch[key][i] for key in ("task_id", "env_failed", "env_error", "ended_by")}
        ids = output.batch["input_ids"][i][output.batch["attention_mask"][i].bool()]
        mask = output.batch["response_mask"][i]
        responses = output.batch["responses"][i]
        scripted = scripts[tasks[info["task_id"]]["instruction"]]
        turns = int(output.non_tensor_batch["__num_turns__"][i])
        replies_used = scripted[: (turns // 2)] if not info["env_failed"] else []
        rows[info["task_id"]] = {
            **{k: (bool(v) if k == "env_failed" else str(v)) for k, v in info.items()},
            "reward": float(output.batch["rm_scores"][i].sum()),
            "num_turns": turns,
            "masked_tokens": int(mask.sum()),
            "model_tokens": sum(len(tokenizer.encode(r, add_special_tokens=False)) + 1 for r in replies_used),
            "masked_text": tokenizer.decode(responses[mask.bool()], skip_special_tokens=True),
            "replies": "".join(replies_used),
            "response_tokens": int(output.batch["attention_mask"][i][-responses.shape[0]:].sum()),
            "images": int(output.non_tensor_batch["images"][i]),
            "vision_starts": int((ids == tokenizer.convert_tokens_to_ids("<|vision_start|>")).sum()),
            "image_pads": int((ids == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()),
            "position_ids": output.batch["position_ids"].shape[1] if output.batch["position_ids"].dim() == 3 else 1,
        }
        if vision:
            rows[info["task_id"]]["image_grid"] = output.non_tensor_batch["multi_modal_inputs"][i]["image_grid_thw"].tolist()
    ray.kill(worker)
    return rows


def _kill_desktop_running(pool, task_id: str, after_steps: int) -> threading.Thread:
    """Kill (SIGKILL, whole process group) the desktop that runs ``task_id`` once it took ``after_steps`` steps."""
    import signal
    from contextlib import suppress

    import ray

    from rayenv.waiting import WaitTimeout, wait_until

    def killed() -> bool:
        for env in pool.envs().values():
            try:
                status = ray.get(env.status.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a desktop being replaced does not answer
                continue
            if status["task_id"] == task_id and status["steps"] >= after_steps:
                os.killpg(status["details"]["pgid"], signal.SIGKILL)
                return True
        return False

    def watch() -> None:
        with suppress(WaitTimeout):  # after 600 s the watcher just stops; the test checks the outcome
            wait_until(killed, 600, interval=0.2, what=f"the desktop of {task_id} at step {after_steps}")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _arpo(pool, tasks: dict[str, dict], scripts: dict[str, list[str]]) -> dict:
    import ray

    from rayenv.rollout.arpo import ARPOEnvWorker

    workers = {tid: ARPOEnvWorker.remote(i, max_steps=6, pool=POOL, namespace=NAMESPACE, parser="pyautogui")
               for i, tid in enumerate((SOLVED, UNSOLVED))}

    def episode(task_id: str):
        worker, task = workers[task_id], tasks[task_id]
        first = ray.get(worker.reset.remote(task))
        for prediction in scripts[task["instruction"]]:
            if ray.get(worker.step.remote(prediction))["is_done"]:
                break
        score = ray.get(worker.evaluate.remote())
        history = ray.get(worker.get_history_messages.remote())
        return first, score, [m["role"] for m in history], len(ray.get(worker.get_history_images.remote()))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as threads:
        results = dict(zip(workers, threads.map(episode, workers)))
    return {"scores": {tid: r[1] for tid, r in results.items()},
            "first_reply_keys": sorted(results[SOLVED][0]),
            "history_roles": {tid: r[2] for tid, r in results.items()},
            "images": {tid: r[3] for tid, r in results.items()}}


def main(scenario: str) -> dict:
    import ray

    from rayenv import EnvPool

    work = Path(os.environ["RAYENV_E2E_WORK"])
    ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE, log_to_driver=False)
    tasks = _tasks()
    if scenario == "setup":
        pool = EnvPool.create(name=POOL, size=2, provider="process", namespace=NAMESPACE, health_interval=2.0,
                              desktop={"provider": "process", "screen_width": SCREEN[0], "screen_height": SCREEN[1]},
                              env={"default_pause": 0.2})
        return {"pool": _pool_counts(pool)}
    pool = EnvPool.connect(POOL, namespace=NAMESPACE)
    pool.wait_healthy(timeout=300)
    if scenario == "teardown":
        pool.shutdown()
        return {}
    if scenario == "agent_loop":
        result = {"rows": _run_agent_loops(work, _scripts(tasks, WRONG_ACTIONS))}
    elif scenario == "images":  # one solved episode with room for every screenshot, one with room for two
        vl = (f"rayenv.agent.max_pixels={MAX_PIXELS}",)
        runs = {"full": vl, "tight": (*vl, f"data.max_response_length={TIGHT_RESPONSE}")}
        result = {"rows": {name: _run_agent_loops(work, _scripts(tasks, WRONG_ACTIONS), task_ids=(SOLVED,), vision=True,
                                                  overrides=extra)[SOLVED] for name, extra in runs.items()}}
    elif scenario == "arpo":
        result = _arpo(pool, tasks, _scripts(tasks, WRONG_ACTIONS))
    elif scenario == "failure":  # the unsolved task waits a while; its desktop dies after its first step
        scripts = _scripts(tasks, [WRONG_ACTIONS[0], "time.sleep(1)", "time.sleep(1)", "time.sleep(1)", "DONE"])
        result = {"rows": _run_agent_loops(work, scripts, during=lambda: _kill_desktop_running(pool, UNSOLVED, 1))}
        pool.wait_healthy(timeout=300)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    return {**result, "pool": _pool_counts(pool)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str))
