"""The run infrastructure every stage shares: Hydra composition over the typed configs
(:mod:`pipeline.config`), the run section and device resolution (:mod:`pipeline.run`), the run lock,
provenance and seeding.

Imports ``core`` and ``scenes``; it names no stage (each stage registers its own config schema).
"""
