"""Flywheel inference."""
