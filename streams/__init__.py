"""Flywheel streams."""
