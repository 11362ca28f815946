"""Flywheel trainer."""
