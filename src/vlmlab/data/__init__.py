"""Data sources, vision I/O, samplers and collators."""
