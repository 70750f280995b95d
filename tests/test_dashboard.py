"""The Ray dashboard as the window (issue 13): a user opening the Actors page of a two-node cluster sees
each desktop by name (pool, slot, provider, generation) and, in its repr, which env host it is on.

Real parts: `ray start` head + env node (rayenv/tools/localcluster.py), a pool of process desktops, and the
dashboard loaded in Debian's headless Chromium driven by Playwright's client (no `playwright install`).
The screenshot is kept in the test's tmp dir (printed at the end).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import ray

from rayenv import EnvPool
from rayenv.tools.localcluster import ray_cluster

pytestmark = [pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BASE_PORT = 29400
DASHBOARD = f"http://127.0.0.1:{BASE_PORT + 4}"  # localcluster pins the dashboard at base + 4
NAMESPACE = "rayenv-dash"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    if not shutil.which(CHROMIUM):
        raise RuntimeError("the dashboard test needs Debian's chromium: apt-get install -y chromium")
    with ray_cluster(tmp_path_factory.mktemp("dash"), base_port=BASE_PORT, head_python=sys.executable,
                     env_python=sys.executable, env_units=2) as cluster:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        pool = EnvPool.create(name="dash", size=2, provider="process", namespace=NAMESPACE,
                              desktop={"provider": "process", "screen_width": 800, "screen_height": 600})
        yield pool
        pool.shutdown()
        ray.shutdown()


def test_the_actors_page_names_each_desktop_and_its_host(pool, tmp_path):
    from playwright.sync_api import sync_playwright

    slots = pool.status().slots
    names = [f"dash.env-{s.slot:02d}.process.g{s.generation}" for s in slots]
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    shot = tmp_path / "dashboard-actors.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            extra_http_headers={"Authorization": f"Bearer {token}"}, viewport={"width": 1600, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(f"{DASHBOARD}/#/actors", timeout=60_000)
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "OSWorldEnv" in body and "PoolManager" in body
    assert body.count("ALIVE") >= 3  # both desktops and the pool's manager
    assert all(name in body for name in names)
    assert body.count("host=local") >= 2  # the repr says where (this cluster's env node carries no host label)
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
