"""``benchmarks.image_train_step``: both rows (one lookup entry, the split), the limit restored, the
RESULTS.md section (written to a temporary path)."""

from __future__ import annotations

from pathlib import Path

import pytest

import student.planes as planes_module
from benchmarks import image_train_step, results


def test_both_rows_and_the_written_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    limit = planes_module.MAX_LOOKUP_BATCHES
    image_train_step.main(["--size", "16", "--steps", "1", "--repeats", "1"])
    assert planes_module.MAX_LOOKUP_BATCHES == limit
    section = (tmp_path / "RESULTS.md").read_text()
    assert "## image_train_step" in section and "16x16 views" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", f"| {limit}"]
    assert rows[0].endswith("| 1.00x |")


def test_the_limit_is_what_a_training_lookup_splits_into() -> None:
    import torch

    planes = torch.zeros(3, 2, 4, 4, requires_grad=True)
    with image_train_step.lookup_split(2):
        assert planes_module.lookup_batches(24, planes) == 2
    assert planes_module.lookup_batches(24, planes) == planes_module.MAX_LOOKUP_BATCHES
