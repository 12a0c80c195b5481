"""Config plumbing: typed dataclasses are the configs, ``conf/`` only composes them.

Each stage's dataclass (a :class:`pipeline.run.RunConfig`) holds every default once and is registered as
the structured config ``<stage>_schema`` (:func:`register_stage`); ``conf/<stage>.yaml`` holds only the
defaults list (that schema, then the profile) and Hydra's own settings; ``conf/<stage>_profile/<p>.yaml``
holds only what profile ``p`` changes (a stage a profile does not change has no file). Entry points call
:func:`to_dataclass` once; below them code sees dataclasses, never a ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.checks import validate
from core.errors import UserError

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROFILES = ("cpu", "gpu", "paper")  # profile=<p>: each stage applies conf/<stage>_profile/<p>.yaml if any
STAGES = ("teacher", "data_gen", "student", "export", "viewer")  # conf/<stage>.yaml (render: no Hydra)


def _scene_name(path: str | None, name: str | None = None) -> str:
    if name:
        return str(name)
    return Path(str(path)).expanduser().resolve().name if path else "mic_100"


if not OmegaConf.has_resolver("scene_name"):
    OmegaConf.register_new_resolver("scene_name", _scene_name)
for _profile in PROFILES:  # the choices of the profile group: names only, no settings of their own
    ConfigStore.instance().store(group="profile", name=_profile, node={}, package="_global_")


_SCHEMAS: dict[str, type] = {}  # stage -> its dataclass, as registered in the ConfigStore


def register_stage(name: str, cls: type) -> None:
    """Make dataclass ``cls`` the base of ``conf/<name>.yaml`` (its defaults list names ``<name>_schema``)."""
    ConfigStore.instance().store(name=f"{name}_schema", node=cls)
    _SCHEMAS[name] = cls


def stage_schema(name: str) -> type:
    """The dataclass registered for stage ``name`` by its module (importing the stage's module registers it:
    this package names no stage, so that no stage import closes a cycle; ``testing.stages`` imports them).

    Raises:
        UserError: ``name`` is not a registered stage.
    """
    if name not in _SCHEMAS:
        raise UserError(f"stage {name!r} is not registered: import its module first (one of {list(STAGES)})")
    return _SCHEMAS[name]


def to_dataclass(cfg: DictConfig | dict[str, Any], cls: type[T]) -> T:
    """Validate a composed config against dataclass ``cls`` and return an instance.

    Raises:
        UserError: an unknown key or a value of the wrong type, named.
    """
    try:
        schema = OmegaConf.structured(cls)
        merged = OmegaConf.merge(schema, cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(f"invalid config: {str(exc).splitlines()[0]}") from None
    validate(obj)
    return obj  # type: ignore[return-value]


def to_plain(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-able dict (for checkpoints and metrics)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config from ``conf/`` without running an app (for tests and benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if config_name in STAGES:
        stage_schema(config_name)  # registered before Hydra reads its defaults list
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


def check_command_line(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Compose ``config_name`` with the command line's overrides before Hydra does, so that a bad
    override (an unknown key, a value of the wrong type, a profile that does not exist) exits 1 with one
    line, ``error: <override>: <problem>``, instead of Hydra's report of several. A command line with
    flags (``--cfg job``, ``--help``, ``-m``) is left to Hydra, and so are ``hydra.*`` overrides."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg.startswith("-") for arg in args):
        return
    try:
        compose(config_name, [arg for arg in args if not arg.lstrip("+~").startswith("hydra.")])
    except (HydraException, OmegaConfBaseException) as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cause = exc.__cause__
        if cause is not None and str(cause).strip():
            problem += f" ({str(cause).strip().splitlines()[0]})"
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported for config tweaking in tests."""
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
