"""Workarounds for library problems, one named module each (see README, "Workarounds")."""
