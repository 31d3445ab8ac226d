"""Usage: the live cost-attribution tracker and its exposition at /usage_metrics."""
