"""Files that are never half-written, in folders that are checked before any expensive work.

`atomic_write_bytes` writes to a temporary sibling, fsyncs and renames it over the target (atomic on
POSIX); `file_in` refuses a file name built from data that would leave its folder.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from detect.errors import UserError


def file_in(folder: str | Path, name: str) -> Path:
    """folder/name for a file name built from data (a class name, an image id); a name that would
    leave the folder (a path separator, '..', an absolute path) is refused, whatever the caller checked."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise UserError(f"{folder}: refusing to write {name!r}: the name would leave the output folder")
    return Path(folder) / name


def output_folder(path: str | Path) -> Path:
    """Create the output folder `path` (and its parents) now, before any expensive work, and check that
    files can be written in it: a file in the way or a read-only place is one UserError naming the path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = err.filename or path
        raise UserError(f"{path}: cannot create the output folder ({where}: {err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: the output folder is not writable")
    return path


def current_umask() -> int:
    """The process umask (read from /proc where possible: os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call write(file_object) on a temporary sibling of `path`, fsync it, then rename it over `path`.

    The file gets the permissions a plain open() would give (0666 minus the umask), not mkstemp's 0600.
    An OSError (read-only folder, a file where a folder should be, a full disk) leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
