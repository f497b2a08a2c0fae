"""torchmetrics for each task."""
