"""Tests of nas_meta.search, one file per module (fast unless marked slow)."""
