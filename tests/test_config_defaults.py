"""Each default is written once: in the stage's dataclass. ``conf/`` only composes.

A stage's composed config (``python -m <stage>`` with no overrides, for every profile) must equal its
dataclass's defaults plus what that profile's file states, and nothing else: base YAML files hold only the
defaults list and Hydra's settings, a profile file states only values that differ from the defaults, and
no profile file is empty.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR, PROFILES
from testing.stages import STAGE_MODULES, compose, stage_schema


def _profile_file(stage: str, profile: str) -> Path:
    return CONF_DIR / f"{stage}_profile" / f"{profile}.yaml"


def _has_profiles(stage: str) -> bool:
    return (CONF_DIR / f"{stage}_profile").is_dir()


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _plain(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_every_stage_file_has_a_schema() -> None:
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(STAGE_MODULES)
    for stage in STAGE_MODULES:
        assert dataclasses.is_dataclass(stage_schema(stage)), stage  # registered by its module


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_base_yaml_holds_only_the_defaults_list(stage: str) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{stage}.yaml"))
    assert isinstance(raw, dict) and set(raw) <= {"defaults", "hydra"}, sorted(raw)
    assert raw["defaults"][0] == f"{stage}_schema"


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
@pytest.mark.parametrize("profile", PROFILES)
def test_composed_config_is_the_dataclass_plus_the_profile(stage: str, profile: str) -> None:
    expected = OmegaConf.structured(stage_schema(stage))
    overrides = [f"profile={profile}"]  # every stage takes every profile (scripts/demo.sh profile=gpu)
    if _has_profiles(stage) and _profile_file(stage, profile).is_file():
        expected = OmegaConf.merge(expected, OmegaConf.load(_profile_file(stage, profile)))
    got, want = _leaves(_plain(compose(stage, overrides))), _leaves(_plain(expected))
    differ = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    assert not differ, differ


def test_profiles_state_only_changes() -> None:
    """Every value in a profile file differs from the dataclass default (a key restating a default is a
    second copy of it), names a real key, and no profile file is empty."""
    files = sorted(CONF_DIR.glob("*_profile/*.yaml"))
    assert files
    for path in files:
        stage = path.parent.name.removesuffix("_profile")
        assert path.stem in PROFILES, f"{path}: not a profile ({PROFILES})"
        defaults = _leaves(_plain(OmegaConf.structured(stage_schema(stage))))
        stated = _leaves(OmegaConf.to_container(OmegaConf.load(path)))  # type: ignore[arg-type]
        assert stated, f"{path}: empty (a profile that changes nothing has no file)"
        for key, value in stated.items():
            assert key in defaults, f"{path}: {key} is not a key of {stage_schema(stage).__name__}"
            assert value != defaults[key], f"{path}: {key}={value!r} restates the default"


def test_profile_changes_reach_the_stage() -> None:
    """The profile mechanism works (not only the files): the CPU profile's student is the hash student
    (``auto``: the image student of a forward-facing scene)."""
    cpu, paper = compose("student", ["profile=cpu"]), compose("student", ["profile=paper"])
    assert (cpu.model.decoder, cpu.model.encoding, cpu.model.depth) == ("auto", "hash", 4)
    assert (paper.model.encoding, paper.model.depth, paper.model.ray_range) == ("pe", 88, "near_far")
