"""Image profiles, without building anything: each profile has its own content-hashed tags, the small
profile (the default) does not change when the osworld recipe does, and a desktop asks for its profile's
image with the client password."""

from __future__ import annotations

import pydantic
import pytest

from rayenv.desktop_lite import build as lite_build
from rayenv.desktop_lite.profiles import OSWORLD_PROFILE_DIR, PROFILES, get_profile
from rayenv.desktop_vm import build as vm_build
from rayenv.errors import ConfigError
from rayenv.providers import DesktopSpec, Ownership, make_provider


def test_each_profile_has_its_own_images():
    small, osworld = lite_build.default_image_tag("small"), lite_build.default_image_tag("osworld")
    assert small.startswith("rayenv/desktop-lite:") and osworld.startswith("rayenv/desktop-lite-osworld:")
    assert lite_build.base_tag("small") != lite_build.base_tag("osworld")
    assert lite_build.default_image_tag() == small  # the default profile is the small one
    assert vm_build.disk_key("small") != vm_build.disk_key("osworld")
    assert vm_build.default_image_tag("small") != vm_build.default_image_tag("osworld")


def test_the_small_profile_is_not_made_of_the_osworld_recipe():
    recipe = set(OSWORLD_PROFILE_DIR.rglob("*"))
    assert not recipe & set(get_profile("small").layer_files())
    assert not recipe & set(vm_build._disk_files("small"))
    assert OSWORLD_PROFILE_DIR / "osworld-session" in get_profile("osworld").layer_files()


def test_the_osworld_profile_adds_the_apps_tasks_use_on_top_of_the_common_desktop():
    packages = lite_build.profile_packages(get_profile("osworld"))
    assert set(lite_build.PACKAGES) < set(packages)
    assert {"chromium", "libreoffice-calc", "gimp", "vlc", "thunderbird", "gnome-terminal", "sudo",
            "pulseaudio"} <= set(packages)


def test_an_unknown_profile_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="unknown image profile 'huge'") as raised:
        get_profile("huge")
    assert all(name in raised.value.hint for name in PROFILES)
    with pytest.raises(pydantic.ValidationError, match="choose one of small, osworld"):
        DesktopSpec(provider="lite", profile="huge")


def test_a_lite_desktop_asks_for_its_profiles_image_and_passes_the_client_password():
    spec = DesktopSpec(provider="lite", profile="osworld", client_password="s3cret")
    options = make_provider(spec, Ownership(owner="profile-tests", env_name="p")).container_options()
    assert options["image"] == lite_build.default_image_tag("osworld")
    assert options["environment"]["CLIENT_PASSWORD"] == "s3cret"
    small = make_provider(DesktopSpec(provider="lite"), Ownership(owner="profile-tests", env_name="s"))
    assert small.container_options()["image"] == lite_build.default_image_tag("small")
