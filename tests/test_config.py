"""PoolConfig: overrides merge into the defaults and the YAML file, section by section (issue 12, item 2).

Every shape of ``EnvPool.create`` that the docs show resolves here, through ``PoolConfig.load`` (which
``create`` calls); tests/test_faults_e2e.py creates a real lite pool from the shape that used to turn
into host-process desktops.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rayenv.errors import ConfigError
from rayenv.pool.config import PoolConfig

REPO = Path(__file__).resolve().parents[1]


def test_a_desktop_override_keeps_the_provider_given_beside_it():
    config = PoolConfig.load(None, provider="docker", desktop={"boot_timeout": 600})
    assert (config.desktop.provider, config.desktop.boot_timeout) == ("docker", 600)


def test_the_pool_md_create_shape_gives_docker_desktops_with_every_override():
    config = PoolConfig.load(None, name="default", size=8, provider="docker",
                             desktop={"screen_width": 1920, "screen_height": 1080, "boot_timeout": 600},
                             env={"step_timeout": 60, "require_a11y_tree": False})
    assert config.desktop.provider == "docker"
    assert (config.desktop.screen_width, config.desktop.screen_height, config.desktop.boot_timeout) == (1920, 1080, 600)
    assert (config.size, config.env.step_timeout, config.env.observe_timeout) == (8, 60, 30.0)


def test_the_docstring_shape_gives_process_desktops():
    config = PoolConfig.load(None, name="demo", size=2, provider="process")
    assert (config.name, config.size, config.desktop.provider) == ("demo", 2, "process")


def test_the_provider_may_be_given_inside_the_desktop_section_alone():
    config = PoolConfig.load(None, provider=None, desktop={"provider": "lite", "screen_width": 1280})
    assert (config.desktop.provider, config.desktop.screen_width) == ("lite", 1280)


def test_the_same_provider_given_both_ways_is_accepted():
    assert PoolConfig.load(None, provider="lite", desktop={"provider": "lite"}).desktop.provider == "lite"


def test_two_different_providers_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="contradicts") as raised:
        PoolConfig.load(None, provider="docker", desktop={"provider": "lite"})
    assert raised.value.hint == "give the provider once, either as provider= or inside desktop="


def test_overrides_merge_into_the_yaml_files_sections(tmp_path):
    config = PoolConfig.load(REPO / "configs" / "pool.yaml", desktop={"boot_timeout": 600}, env={"step_timeout": 5})
    assert config.desktop.provider == "lite"  # from the file
    assert config.desktop.boot_timeout == 600
    assert (config.env.step_timeout, config.env.default_pause) == (5, 0.5)


def test_the_provider_flag_overrides_the_files_provider():
    config = PoolConfig.load(REPO / "configs" / "pool.yaml", provider="process", size=3)
    assert (config.desktop.provider, config.desktop.screen_width, config.size) == ("process", 1920, 3)


def test_a_value_out_of_range_in_an_override_is_still_refused():
    with pytest.raises(ConfigError, match="screen_width"):
        PoolConfig.load(None, desktop={"screen_width": 10})


def test_a_host_spare_is_refused_for_desktops_not_started_from_a_vm_template():
    for desktop in ({"host_spare": True}, {"host_spare": True, "vm_template": False}):
        with pytest.raises(ConfigError, match="host_spare needs VM desktops started from a template"):
            PoolConfig.load(None, provider="lite" if "vm_template" not in desktop else "docker", desktop=desktop)
    assert PoolConfig.load(None, provider="docker", desktop={"host_spare": True}).desktop.host_spare


def test_a_warm_spare_is_refused_for_process_desktops_and_counts_twice_for_memory():
    with pytest.raises(ConfigError, match="warm_spare needs a container provider"):
        PoolConfig.load(None, provider="process", desktop={"warm_spare": True})
    one, spared = (PoolConfig.load(None, provider="lite", desktop={"warm_spare": spare}).desktop.memory_need()
                   for spare in (False, True))
    assert spared == 2 * one
