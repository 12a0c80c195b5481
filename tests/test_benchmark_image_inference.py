"""``benchmarks.image_inference`` on a tiny exported image run: the table's rows per size, a size without a
file reported with its export command, the RESULTS.md section and the JSON (written to temporary paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import image_inference, results
from export.variants import variant_filename
from testing.runs import export_tiny_image_run, make_tiny_teacher_run


@pytest.fixture(scope="module")
def image_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with a tiny teacher and a tiny image student exported at 16x16 (training) and 8x8."""
    run_dir = tmp_path_factory.mktemp("image_run")
    make_tiny_teacher_run(run_dir, tiny_scene)
    export_tiny_image_run(run_dir, tiny_scene, image_sizes=[[8, 8]])
    return run_dir


def test_rows_per_size_a_missing_size_and_the_written_section(
        image_run: Path, tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    argv = ["--run-dir", str(image_run), "--scene", str(tiny_scene), "--sizes", "16,8,24", "--repeats", "1",
            "--psnr-views", "2", "--json", str(tmp_path / "out.json")]
    record = image_inference.main(argv)
    rows = [(tuple(r["size"]), r["model"]) for r in record["rows"]]
    models = ["teacher", *(p for p in image_inference.PRECISIONS  # int8: if export's gate published it
                           if (image_run / "export" / variant_filename(p, False)).is_file())]
    assert rows == [((16, 16), m) for m in models] + [((8, 8), m) for m in models]
    by = {(tuple(r["size"]), r["model"]): r for r in record["rows"]}
    assert all(r["ms"] > 0 and r["x_teacher"] > 0 for r in record["rows"])
    assert by[(16, 16), "fp32"]["file"] == "student.onnx" and by[(8, 8), "fp32"]["file"] == "student_8x8.onnx"
    assert by[(16, 16), "fp16"]["psnr_vs_fp32"] > 30  # the same image up to fp16 rounding
    assert by[(16, 16), "fp32"]["test_psnr"] is not None and by[(8, 8), "fp32"]["test_psnr"] is None
    assert by[(16, 16), "teacher"]["test_psnr"] is not None
    assert list(record["missing"]) == ["24x24"]
    assert f"run_dir={image_run} 'image_sizes=[[8,8],[24,24]]'" in record["missing"]["24x24"]  # keeps 8x8
    assert record["reference"]["gflop_s"] > 0
    out = capsys.readouterr().out
    assert "| 24x24 | - | no exported file: `python -m export.onnx" in out
    assert "400x400 fp32: not in --sizes" in out and "24x24 fp32" not in out
    assert "fastest variant within 0.3 dB of fp32 at 8x8:" in out
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- BEGIN image_inference -->" in section
    assert f"Command: `python -m benchmarks.image_inference {' '.join(argv)}`" in section
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == record["rows"]


def test_a_run_without_an_export_is_a_one_line_error(tiny_scene: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^error: no .*student\.onnx: export the image student first: "
                                         r"python -m export\.onnx run_dir="):
        image_inference.main(["--run-dir", str(tmp_path), "--scene", str(tiny_scene), "--no-write"])
