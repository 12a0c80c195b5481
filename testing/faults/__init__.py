"""The fault harness: kills, corrupt or stale files and bad values, each tried against the real stages.

:mod:`~testing.faults.harness` defines a case and runs one; the cases live one module per area
(:mod:`~testing.faults.checkpoints`, :mod:`~testing.faults.files`, :mod:`~testing.faults.provenance`,
each with a ``CASES`` list; :mod:`~testing.faults.kills` holds the process-killing tools they and the
resume tests share) and :func:`testing.faults.cases.all_cases` lists them all. ``tests/test_faults.py``
runs every case; ``python -m benchmarks.faults`` prints how each was answered and writes the ``faults``
section of ``benchmarks/RESULTS.md``.

A fault whose answer a test of ``tests/`` already checks (same call, same fault, same answer) is not a
case here: the bad config values, camera paths, scene files, shard cameras and ONNX metadata of
``tests/test_config_validation.py``, for one.

This ``__init__`` imports none of its modules (they import each other: an import back would close a cycle).
"""
