"""Write one benchmark's section of ``benchmarks/RESULTS.md`` (other sections are kept)."""

from __future__ import annotations

import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names, with the command that produced it. All figures were\n"
    "measured on this project's machines: a 2-core x86-64 CPU (AVX-512, AMX), 24 GiB, no GPU. Timings on\n"
    "this machine swing 2-10x with other load, so each script compares its variants within one run.\n"
    "No GPU figure here was measured; none is claimed.\n"
)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the machine type where that cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_section(name: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    if command is None:
        script = Path(sys.argv[0])
        module = f"-m benchmarks.{script.stem}" if script.parent.name == "benchmarks" else str(script)
        command = " ".join(["python", module, *sys.argv[1:]])
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- BEGIN {name} -->\n## {name}\n\nCommand: `{command}`  \n"
        f"Run: {stamp}, torch {torch.__version__}, {platform.machine()} ({cpu_name()}), "
        f"{torch.get_num_threads()} threads\n\n{body.strip()}\n<!-- END {name} -->\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS)
