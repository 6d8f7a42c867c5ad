"""Atomic I/O, files, hashing, provenance and devices: one of each."""
