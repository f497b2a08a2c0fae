"""Synthetic stand-ins for every data format, with known ground truth visible in the pixels."""
