"""The scene-facts record and its torch-free twin: field for field the same, refusing the same records."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from core.errors import UserError
from core.scene_facts import SceneFacts
from export.runtime.meta import ModelError
from export.runtime.meta import SceneFacts as RuntimeSceneFacts
from tests.scene_fact_cases import BAD, GOOD


def _shape(cls: type) -> list[tuple[str, Any]]:
    """Each field's name and default, in order (``MISSING`` for a required one)."""
    return [(f.name, f.default) for f in dataclasses.fields(cls)]


def test_the_runtime_twin_has_the_same_fields_in_the_same_order_with_the_same_defaults() -> None:
    assert _shape(RuntimeSceneFacts) == _shape(SceneFacts)
    assert all(f.default_factory is dataclasses.MISSING for f in dataclasses.fields(RuntimeSceneFacts))


@pytest.mark.parametrize("name", list(GOOD))
def test_both_read_a_good_record_to_the_same_values(name: str) -> None:
    data = json.loads(json.dumps(GOOD[name]))  # as it comes out of meta.json or lightfield.scene
    core = SceneFacts.from_dict(data, "meta.json")
    runtime = RuntimeSceneFacts.from_dict(data, "m.onnx")
    assert dataclasses.asdict(runtime) == core.to_dict()
    assert SceneFacts.from_dict(core.to_dict(), "again") == core  # round trip


@pytest.mark.parametrize("name", list(BAD))
def test_both_refuse_a_bad_record_in_one_line(name: str) -> None:
    data, word = BAD[name]
    with pytest.raises(UserError) as core:
        SceneFacts.from_dict(json.loads(json.dumps(data)), "runs/x/pseudo/meta.json")
    with pytest.raises(ModelError) as runtime:
        RuntimeSceneFacts.from_dict(json.loads(json.dumps(data)), "runs/x/export/student.onnx")
    for info, source in ((core, "runs/x/pseudo/meta.json"), (runtime, "runs/x/export/student.onnx")):
        message = str(info.value)
        assert message.startswith(f"{source}: ") and "\n" not in message and word in message, message
