"""User-facing errors: the CLI prints these as one clear message, never a traceback."""

from __future__ import annotations


class DetoxkitError(Exception):
    """An error the user can fix (bad input, missing package, wrong name)."""


class InputError(DetoxkitError):
    """Bad input data; names the file, line and field where known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        self.reason = message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
