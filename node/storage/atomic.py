"""Files that are either wholly written or not there at all.

Theory of operation
-------------------
A crash (or power loss) in the middle of writing a file must never leave a
half-written file under the final name. The classic recipe does that:

1. write the bytes to a temporary file on the same filesystem;
2. flush and ``fsync`` it, so its *contents* are on disk;
3. ``rename`` it over the final name -- atomic on POSIX: a reader sees the
   old file or the new one, never a mixture;
4. ``fsync`` the directory, so the *rename itself* is on disk. Without this
   step a power loss can bring back the old directory entry even though
   the call returned.

Only after step 4 may a caller tell anyone the file is stored. A failure at
any step removes the temporary file and re-raises; the final name is
untouched unless the rename already happened.

The steps are also offered one by one (`write_temp_file`, `fsync_directory`)
for callers that must do something between writing and renaming -- the
shard store renames under its lock, after checking its index.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_directory", "make_directory", "write_file_atomically", "write_temp_file"]

FileContents = bytes | bytearray | memoryview | Callable[[BinaryIO], None]


def _check_mode(mode: int) -> None:
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode must be an int in 0..0o7777, got {mode!r}")


def _check_contents(data: object) -> None:
    if not isinstance(data, bytes | bytearray | memoryview) and not callable(data):
        raise TypeError(
            f"data must be bytes or a callable writing to a binary file, got {type(data).__name__}"
        )


def fsync_directory(path: Path) -> None:
    """Make the entries of directory `path` (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: Path) -> bool:
    """Create directory `path` durably unless it exists; True if it was created.

    The new entry lives in the parent directory, so the parent is synced: a
    file renamed into a directory that vanishes on power loss is lost too.
    """
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory") from None
        return False
    fsync_directory(path.parent)
    return True


def write_temp_file(directory: Path, data: FileContents, *, mode: int = 0o600) -> Path:
    """Write `data` to a new file in `directory`, synced to disk; returns its path.

    The caller renames it into place (then syncs the target directory) or
    unlinks it. On failure nothing is left behind.
    """
    _check_mode(mode)
    _check_contents(data)
    # mkstemp creates the file with O_EXCL and mode 0600 whatever the umask,
    # so no other user can open it before fchmod sets the final mode.
    fd, name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(data, bytes | bytearray | memoryview):
                file.write(data)
            else:
                data(file)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def write_file_atomically(path: Path, data: FileContents, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` (bytes, or a callable that writes them), durably.

    `path` ends up with permission bits exactly `mode`. When this returns,
    the new contents survive a crash; when it raises, `path` still holds its
    old contents (or is still absent).
    """
    _check_mode(mode)
    _check_contents(data)
    directory = path.parent
    temp = write_temp_file(directory, data, mode=mode)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_directory(directory)
