"""CLI: ``python -m report [overrides]``: write the run's report and print its metrics table.

Takes the same Hydra overrides as the stages (``run_dir=...``, ``scene.path=...``) to find the run folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import student.config  # noqa: F401  (registers the student schema, whose run section finds the run folder)
from pipeline.config import check_command_line, compose
from report.build import metrics_table, write_report


def main(argv: list[str] | None = None) -> None:
    """Write ``report.md``/``report.html`` into the run folder; print the metrics table and where it went."""
    args = list(sys.argv[1:] if argv is None else argv)
    check_command_line("student", args)
    cfg = compose("student", args)
    run_dir = Path(str(cfg.run_dir))
    md, _ = write_report(run_dir)
    print(metrics_table(run_dir))
    print(f"report: {md}")
    if (run_dir / "viewer" / "index.html").is_file():
        print(f"web viewer: python -m export.viewer run_dir={run_dir} serve=true (then open the URL)")


if __name__ == "__main__":
    main()
