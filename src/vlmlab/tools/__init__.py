"""Command-line tools: synthetic data writers and other utilities."""
