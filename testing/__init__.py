"""Helpers that the tests and the benchmarks share (nothing else imports this package): the stage registry
for composing configs (:mod:`testing.stages`), the analytic scene generator, the fault harness and the
command-line helpers."""
