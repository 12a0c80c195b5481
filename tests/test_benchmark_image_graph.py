"""``benchmarks.image_graph`` on a tiny frame: its rows, each graph equal to PyTorch, the ConvTranspose
variant's graph, the written section, an unknown variant refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import image_graph, image_train_step, results
from export.image import export_image_student


def test_rows_parity_and_the_written_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    names = ["the CPU profile's shape", "8 points a ray", "first tail stage ConvTranspose k4 s2"]
    record = image_graph.main(["--size", "16", "--repeats", "2", "--variants", *names])
    rows = {r["variant"]: r for r in record["rows"]}
    assert list(rows) == names
    assert all(r["best_ms"] > 0 and r["best_ms"] <= r["median_ms"] for r in rows.values())
    assert all(r["max_abs_diff"] < 1e-4 for r in rows.values())  # the graph draws what PyTorch draws
    assert rows["8 points a ray"]["gflop"] < rows["the CPU profile's shape"]["gflop"]
    assert "ConvTranspose" in rows["first tail stage ConvTranspose k4 s2"]["ops"]
    assert "ConvTranspose" not in rows["the CPU profile's shape"]["ops"]
    assert "| 8 points a ray |" in capsys.readouterr().out
    assert "<!-- BEGIN image_graph -->" in (tmp_path / "RESULTS.md").read_text()


def test_the_convtranspose_decoder_draws_every_pixel_from_its_stage() -> None:
    base = image_train_step.image_profile().model.image
    model = image_graph.build(base, {image_graph.CONV_TRANSPOSE: True})
    assert isinstance(model.decoder.ups[0], torch.nn.ConvTranspose2d)
    c2w = torch.eye(4)[None]
    c2w[0, 2, 3] = -4.0
    K = torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]])
    with torch.no_grad():
        out = model.render(c2w, K, 16, 16)
        model.decoder.ups[0].weight.zero_()
        model.decoder.ups[0].bias.fill_(1.0)  # a constant first stage: one 2x2 pattern over the image
        flat = model.render(c2w, K, 16, 16)
    assert out.shape == (1, 16, 16, 3) and out.std() > 0
    assert torch.allclose(flat, flat[:, :2, :2].repeat(1, 8, 8, 1)) and flat.std() > 0
    assert export_image_student(model, 16, 16) is not None  # portable: export_image_student checks


def test_an_unknown_variant_is_a_one_line_error() -> None:
    with pytest.raises(SystemExit, match=r"^error: unknown variants \['wide'\]"):
        image_graph.main(["--size", "16", "--variants", "wide", "--no-write"])
