"""Judging outputs: read golden-format files, compare them, report drift (no torch, no ranks)."""
