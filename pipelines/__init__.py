"""Pipelines built on the vidrender framework; each folder owns its model, data, steps and inference."""
