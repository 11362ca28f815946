"""The root of every error Flywheel raises on purpose, and errors of the data contracts."""

from __future__ import annotations

from dataclasses import dataclass


class FlywheelError(Exception):
    """Base class of all Flywheel errors; the message says what to do about it."""


@dataclass(frozen=True)
class FieldProblem:
    """One reason a payload was rejected: the field's dotted path and what is wrong with it."""

    field: str
    message: str
    code: str


class SchemaValidationError(FlywheelError):
    """A payload does not satisfy its data contract; `problems` lists each bad field."""

    def __init__(self, kind: str, problems: list[FieldProblem]) -> None:
        self.kind = kind
        self.problems = problems
        listed = "; ".join(f"{p.field}: {p.message}" for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"invalid {kind}: {listed}{more}")


class UnknownSchemaError(FlywheelError):
    """A payload names a kind or schema version this release does not know."""
