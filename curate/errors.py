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
    """A bad option or configuration value (all problems reported at once where possible), and the fix."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


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


class StorageError(StagewiseError):
    """A write failed for lack of space or permission: names the path, the cause, and the fix."""


# errno -> (what happened, what to do). EPERM/EACCES alike: the file or folder is not writable by us.
_STORAGE_ERRNOS = {
    "ENOSPC": ("no space left on the device", "free space there, or write to another disk"),
    "EDQUOT": ("disk quota exceeded", "free space there, or write to another disk"),
    "EFBIG": ("file too large for the file system", "write to another disk"),
    "EACCES": ("permission denied", "make it writable, or choose another location"),
    "EPERM": ("operation not permitted", "make it writable, or choose another location"),
    "EROFS": ("read-only file system", "choose a writable location"),
}
NEARLY_FULL_BYTES = 16 << 20


def _errno_name(exc: BaseException) -> str | None:
    """The storage errno of `exc` or of an exception it was raised from (a library may wrap it)."""
    import errno as errno_mod

    seen = exc
    while seen is not None:
        name = errno_mod.errorcode.get(getattr(seen, "errno", None) or -1)
        if name in _STORAGE_ERRNOS:
            return name
        seen = seen.__cause__ or seen.__context__
    return None


def _ask_the_filesystem(path) -> str | None:
    """For a library error that carries no errno (DuckDB, torch.save): ask the disk where `path` lives
    whether it is full or read-only, rather than read the library's message."""
    import os
    import shutil

    folder = os.path.abspath(os.fspath(path))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        if shutil.disk_usage(folder).free < NEARLY_FULL_BYTES:
            return "ENOSPC"
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "EROFS"
    except OSError:
        return None
    return None


def storage_error(exc: BaseException, path, *, option: str | None = None) -> StorageError | None:
    """The StorageError for a failed write to `path`, or None when `exc` is not a space/permission failure.

    `option` names the flag that chose the location (e.g. "--out"), for the fix."""
    name = _errno_name(exc)
    if name is None and getattr(exc, "errno", None) is None:
        name = _ask_the_filesystem(path)
    if name is None:
        return None
    what, fix = _STORAGE_ERRNOS[name]
    if option:
        fix = fix.replace("another disk", f"another disk with {option}").replace(
            "another location", f"another location with {option}")
    where = next((getattr(e, "filename", None) for e in (exc, exc.__cause__, exc.__context__)
                  if getattr(e, "filename", None)), None) or path
    return StorageError(f"cannot write {where}: {what}; {fix}")


class writing:
    """`with writing(path, option="--out"):` turns a space/permission failure into one StorageError
    naming `path` (other errors pass through). The caller removes whatever it had half written."""

    def __init__(self, path, *, option: str | None = None):
        self.path, self.option = path, option

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, StagewiseError) or not isinstance(exc, Exception):
            return False
        err = storage_error(exc, self.path, option=self.option)
        if err is None:
            return False
        raise err from exc
