"""The R2L student: a deep residual MLP light field distilled from the teacher's pseudo-data."""
