"""Workarounds for library problems and the library internals vlmlab reads, one named module each
(see README, "Workarounds")."""
