"""Config value checks: the one-line error a bad value gets, and the helpers each config's ``validate``
uses (:func:`at_least`, :func:`positive`, :func:`in_range`, :func:`one_of`, ...).

Every stage's dataclass config (and the scene's) calls these from its ``validate(self)`` method;
:func:`validate` runs them over a whole config tree and names the key's dotted path
(``error: train.distill.batch_size=0: must be >= 1``). Pure Python: no Hydra, no torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection
from typing import Any

from core.errors import UserError


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
