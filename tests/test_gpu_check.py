"""``scripts/gpu_check.sh`` and ``benchmarks.gpu_check`` as far as a CPU allows: the one-line refusal without
CUDA, the CPU parts end to end (``--allow-cpu``), the shell script's syntax and its pinned wheel line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import PARTS, kernel_specs
from tests.test_hashgrid_kernels import SPECS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
NEEDED = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "webdataset", "braceexpand")


def _no_cuda_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # holds on a machine with a GPU too


def test_without_cuda_one_error_line_and_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=_no_cuda_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_script_without_cuda_says_so_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=_no_cuda_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert [l for l in proc.stderr.splitlines() if l.startswith("error:")] == proc.stderr.strip().splitlines()
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_kernel_shapes_are_the_kernel_tests_shapes() -> None:
    assert kernel_specs() == SPECS


def test_script_syntax_and_pinned_wheel_line() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    header = SCRIPT.read_text().split("set -euo pipefail")[0]
    line = next(l for l in header.splitlines() if "-w scripts/gpu_wheels" in l)
    pins = dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s]*)", line))
    assert set(NEEDED) <= set(pins), line
    docs = (ROOT / "docs" / "gpu.md").read_text()
    assert line.lstrip("# ").strip() in docs, "docs/gpu.md shows the same download line"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_allow_cpu_runs_every_part_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), "--allow-cpu",
           "--teacher-seconds", "2", "--student-seconds", "2", "--n-views", "2", "--max-views", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_no_cuda_env(), capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["complete"] and not report["gpu"] and report["parts"] == list(PARTS)
    rows = report["rows"]
    assert [r["part"] for r in rows] == (["kernel"] * (1 + len(SPECS)) + ["teacher", "data_gen", "student"]
                                         + ["onnx"] * 3 + ["nccl"] * 2 + ["image_student"])
    assert all(r["status"] in ("pass", "ran", "skipped") for r in rows), rows
    by_part = {r["part"]: r for r in rows}
    assert by_part["student"]["data"]["precision"] == "bf16"
    image = by_part["image_student"]["data"]
    assert image["steps"] >= 1 and image["precision"] == "bf16"
    assert by_part["teacher"]["data"]["steps"] >= 1
    assert "| part | check | result | target | status | seconds |" in proc.stdout
    skipped = [r["check"] for r in rows if r["status"] == "skipped"]  # the GPU-only rows say so
    assert skipped == ["CUDAExecutionProvider, 400x400 frame", "2 NCCL ranks on one GPU (all_reduce)"]


def test_a_failing_part_is_a_row_and_the_rest_runs(tmp_path: Path) -> None:
    from benchmarks import gpu_check

    def broken(table: gpu_check.Table, args: object) -> None:
        raise RuntimeError("boom\nsecond line")

    table = gpu_check.Table()
    table.part("teacher", broken, None)
    table.add("onnx", "x", "y", "z", "pass", 0.0)
    assert [r["status"] for r in table.rows] == ["error", "pass"]
    assert table.rows[0]["result"] == "RuntimeError: boom"
    assert table.markdown().count("\n") == 3
