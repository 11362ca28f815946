"""Triton Python-backend model for Flywheel chat (filled in by the next commit)."""
