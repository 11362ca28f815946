"""Flywheel monitoring."""
