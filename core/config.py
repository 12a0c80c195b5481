"""Config plumbing: Hydra YAML in ``conf/`` checked against typed dataclasses.

Entry points call :func:`to_dataclass` once; below them code sees dataclasses, never a ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.errors import UserError

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _scene_name(path: str | None, name: str | None = None) -> str:
    if name:
        return str(name)
    return Path(str(path)).expanduser().resolve().name if path else "mic_100"


if not OmegaConf.has_resolver("scene_name"):
    OmegaConf.register_new_resolver("scene_name", _scene_name)


def to_dataclass(cfg: DictConfig | dict[str, Any], cls: type[T]) -> T:
    """Validate a composed config against dataclass ``cls`` and return an instance.

    Raises:
        UserError: an unknown key or a value of the wrong type, named.
    """
    try:
        schema = OmegaConf.structured(cls)
        merged = OmegaConf.merge(schema, cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"invalid config: {str(exc).splitlines()[0]}") from None


def to_plain(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-able dict (for checkpoints and metrics)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config from ``conf/`` without running an app (for tests and benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported for config tweaking in tests."""
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
