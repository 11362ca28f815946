"""Data contracts shared by every part of Flywheel."""
