"""Config plumbing: typed dataclasses are the configs, ``conf/`` only composes them.

Each stage's dataclass (a :class:`core.run.RunConfig`) holds every default once and is registered as
the structured config ``<stage>_schema`` (:func:`register_stage`); ``conf/<stage>.yaml`` holds only the
defaults list (that schema, then the profile) and Hydra's own settings; ``conf/<stage>_profile/<p>.yaml``
holds only what profile ``p`` changes (a stage a profile does not change has no file). Entry points call
:func:`to_dataclass` once; below them code sees dataclasses, never a ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.errors import UserError

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROFILES = ("cpu", "gpu", "paper")  # profile=<p>: each stage applies conf/<stage>_profile/<p>.yaml if any
# the module that registers each stage's schema (imported by :func:`compose`; entry points import it anyway)
STAGE_MODULES = {"teacher": "teacher.config", "data_gen": "data_gen.render", "student": "student.config",
                 "export": "export.onnx", "render": "export.render", "viewer": "export.viewer"}


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
    """The dataclass of stage ``name`` (one of :data:`STAGE_MODULES`), importing its module to register it
    unless it is registered (not again when that module runs as ``__main__``: its own class counts)."""
    if name not in _SCHEMAS:
        importlib.import_module(STAGE_MODULES[name])
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


class ConfigValueError(UserError):
    """A config value outside what its key allows; :func:`validate` prefixes the key's dotted path.

    Args:
        key: the key, relative to the dataclass whose ``validate`` raised (``"batch_size"``).
        rule: what the value must be (``"must be >= 1"``).
        value: the offending value (left out of the message when not given).
    """

    def __init__(self, key: str, rule: str, value: Any = dataclasses.MISSING):
        self.key, self.rule, self.value = key, rule, value
        super().__init__(self._message())

    def _message(self) -> str:
        shown = "" if self.value is dataclasses.MISSING else f"={self.value}"
        return f"{self.key}{shown}: {self.rule}"

    def under(self, prefix: str) -> ConfigValueError:
        """The same error with ``prefix`` (``"train."``) before the key."""
        return ConfigValueError(prefix + self.key, self.rule, self.value)


def validate(obj: Any, prefix: str = "") -> None:
    """Check a config tree once: the ``validate()`` method of every dataclass in it, innermost first.

    A dataclass opts in with a ``validate(self) -> None`` method (for its own fields: a base class's
    ``validate`` runs too, first, without a ``super()`` call) that raises :class:`ConfigValueError`
    naming its own key (the helpers :func:`at_least`, :func:`positive`, :func:`in_range`, :func:`one_of`
    do); the error is re-raised with the key's dotted path from the root (``train.distill.lr=0: ...``).

    Raises:
        ConfigValueError: the first bad value.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        items = enumerate(value) if isinstance(value, list | tuple) else [(None, value)]
        for index, item in items:
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                validate(item, f"{prefix}{f.name}." if index is None else f"{prefix}{f.name}.{index}.")
    for cls in reversed(type(obj).__mro__):  # a base's checks too (the run section), base first
        check = cls.__dict__.get("validate")
        if callable(check):
            try:
                check(obj)
            except ConfigValueError as exc:
                raise exc.under(prefix) from None


def _values(cfg: Any, keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``(key, value)`` of the set keys (``None`` means "not set", which each key's docs explain)."""
    return [(key, getattr(cfg, key)) for key in keys if getattr(cfg, key) is not None]


def at_least(cfg: Any, minimum: float, *keys: str) -> None:
    """Each of ``keys`` (unless ``None``) is a finite number ``>= minimum``."""
    for key, value in _values(cfg, keys):
        if not (math.isfinite(value) and value >= minimum):
            raise ConfigValueError(key, f"must be >= {minimum}", value)


def positive(cfg: Any, *keys: str) -> None:
    """Each of ``keys`` (unless ``None``) is a finite number ``> 0``."""
    for key, value in _values(cfg, keys):
        if not (math.isfinite(value) and value > 0):
            raise ConfigValueError(key, "must be a finite number > 0", value)


def in_range(cfg: Any, low: float, high: float, *keys: str) -> None:
    """Each of ``keys`` (unless ``None``) lies in ``[low, high]`` (e.g. a probability or a fraction)."""
    for key, value in _values(cfg, keys):
        if not low <= value <= high:  # also false for NaN
            raise ConfigValueError(key, f"must be in [{low}, {high}]", value)


def training_limits(cfg: Any) -> None:
    """``max_steps`` is ``-1`` (none) or ``>= 1``, ``max_seconds`` ``None`` or ``> 0``; not both unlimited."""
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        raise ConfigValueError("max_steps", "must be >= 1, or -1 for no step limit", cfg.max_steps)
    if cfg.max_steps == -1 and cfg.max_seconds is None:
        raise ConfigValueError("max_steps", "with max_seconds=null too, training never ends: set either", -1)
    positive(cfg, "max_seconds")


def torch_device(cfg: Any, key: str) -> None:
    """``key`` names a device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    value = getattr(cfg, key)
    if value not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", str(value)):
        raise ConfigValueError(key, "must be auto, cpu, cuda or cuda:N", value)


def one_of(cfg: Any, key: str, choices: Collection[str]) -> None:
    """``key`` (unless ``None``) is one of ``choices``."""
    value = getattr(cfg, key)
    if value is not None and value not in choices:
        raise ConfigValueError(key, f"must be one of {list(choices)}", value)


def to_plain(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-able dict (for checkpoints and metrics)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config from ``conf/`` without running an app (for tests and benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if config_name in STAGE_MODULES:
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
