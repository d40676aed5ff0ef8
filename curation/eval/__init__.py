"""Curation-quality metrics: how well a stage's output matches the ground truth."""
