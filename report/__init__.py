"""The run's report: ``python -m report`` writes ``<run_dir>/report.md`` and ``report.html`` from the files
every stage left in the run folder (:mod:`report.build`); the pipeline's last step."""
