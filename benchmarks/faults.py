"""Faults: kills, corrupt or stale files and bad values, each tried against the real stages.

Runs every case of the fault harness (:mod:`testing.faults`: what a case is and which answers are
acceptable), prints one table and writes the ``faults`` section of ``benchmarks/RESULTS.md``.
``tests/test_faults.py`` runs the same cases in the test suite.

    python -m benchmarks.faults [--only SUBSTRING]
"""

from __future__ import annotations

import argparse

from benchmarks.results import markdown_table, write_section
from testing.faults.cases import all_cases
from testing.faults.harness import try_case


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose stage or text contains this")
    args = parser.parse_args()
    rows: list[list[object]] = []
    for case in all_cases():
        if args.only and args.only not in f"{case.stage} {case.what}":
            continue
        outcome, seconds = try_case(case)
        rows.append([case.stage, case.kind, case.what, outcome.answer, "yes" if outcome.ok else "**no**",
                     outcome.detail.replace("|", "/")[:160], f"{seconds:.1f}"])
        print(" | ".join(str(v) for v in rows[-1]), flush=True)
    table = markdown_table(["stage", "fault", "tried", "answer", "acceptable", "evidence", "s"], rows)
    print(table)
    failed = sum(1 for r in rows if r[4] != "yes")
    summary = (f"{len(rows)} faults tried, {len(rows) - failed} answered with an exact resume, a reuse, "
               f"a one-line error or a named warning; {failed} not.")
    if not args.only:
        write_section("faults", table + "\n\n" + summary)
    print(summary)


if __name__ == "__main__":
    main()
