"""The small exception family of stagewise. The library raises; only the CLI prints."""

from __future__ import annotations


class StagewiseError(Exception):
    """Base class: a failure a user can fix. The message says what failed, the bad value, and the fix."""


class InputError(StagewiseError):
    """Bad input data: names the file, the line or row, the column, and the fix."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: str | None = None, fix: str | None = None):
        self.path, self.line, self.column, self.fix = path, line, column, fix
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        text = (", ".join(where) + ": " if where else "") + message
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class EmptySplitError(InputError):
    """An export split exists but holds no rows: a pipeline skips that stage, a single stage refuses."""


class ConfigError(StagewiseError):
    """A bad option or configuration value (all problems reported at once where possible)."""


class MissingDependencyError(StagewiseError):
    """An optional heavy dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed; install it with: pip install 'stagewise[{extra}]'")


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module, extra) from exc
