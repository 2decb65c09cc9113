"""Writing files safely: every file sleepcl writes appears whole or not at all, and no write follows a link
someone else planted.

How: the content goes to a temporary file created by :func:`tempfile.mkstemp` in the destination's own folder
(``O_CREAT | O_EXCL``, mode 0600, a random name: nothing can be planted at it, and an existing file or link is
never opened), is flushed and fsync'ed, then renamed over the destination with :func:`os.replace`. A rename
replaces a symbolic link at the destination by the new file; it never writes through the link. Readers see
the old file or the new one, never half a file, and a crash leaves at most a stray ``.NAME.PID.*.tmp`` file
(the writer's process id in its name, so a later writer can tell a dead writer's leftovers from a live one's).

:func:`check_writable` answers "can this destination be written?" before a long job starts, by actually
creating (and removing) such a temporary file there: that is the only test that holds for every user
(``os.access`` says yes to root on a read-only folder it cannot write either) and every file system.

A destination that is a character device or a pipe (``/dev/null``, ``/dev/stdout``, a FIFO) is written into, as
a stream, and never replaced: renaming a regular file over ``/dev/null`` as root would break the system. A link
is followed to such a device only when root or the user owns the link (``/dev/stdout``), never when someone
else planted it. Block devices, sockets and other special files are refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_open", "atomic_write_bytes", "check_writable", "fallback_file", "fsync_dir", "stream_target",
           "temporary_in", "temporary_pid", "write_or_keep"]


def stream_target(path: str | Path) -> bool:
    """True when ``path`` is a character device or a pipe to write into (not to replace); False for a regular
    file, a missing one, or a link someone else planted (replaced as usual). Raises :class:`OSError` for a
    destination that is neither: a block device, a socket, a device reached through another user's link."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            return False  # a dangling link: replaced like any link
        if stat.S_ISREG(target.st_mode) or stat.S_ISDIR(target.st_mode):
            return False
        if st.st_uid not in (0, os.geteuid()):
            raise OSError(f"{path} is a link, made by another user, to a device or pipe; sleepcl does not follow it")
        st = target
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return True
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return False
    kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special"
    raise OSError(f"{path} is {kind}; sleepcl writes only to regular files, character devices such as /dev/null, "
                  "and pipes")


def temporary_in(folder: Path, name: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty temporary file for ``name`` in ``folder``: ``(fd, path)``, opened with O_EXCL under a random
    name ``.NAME.PID.RANDOM.tmp``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=suffix, dir=folder)
    return fd, Path(tmp)


def temporary_pid(tmp: Path, name: str) -> int | None:
    """The writer's process id in a temporary file's name made by :func:`temporary_in` for ``name``, or None."""
    prefix = f".{name}."
    if not tmp.name.startswith(prefix):
        return None
    pid = tmp.name[len(prefix):].split(".", 1)[0]
    return int(pid) if pid.isdigit() else None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = True, **kw: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` (see module doc).

    On an exception the temporary file is removed and ``path`` is left as it was. A character device or pipe
    at ``path`` is written into instead (see :func:`stream_target`).
    """
    path = Path(path)
    if stream_target(path):
        with open(path, mode, **kw) as f:  # no O_CREAT race: the device exists; "w" truncates nothing on it
            yield f
        return
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_in(folder, path.name)
    try:
        # mkstemp makes the file private (0600); the new file gets the mode the old one had, or the usual one
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if fsync:
        fsync_dir(folder)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` by ``data`` atomically (see module doc)."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def _mode_for(path: Path) -> int:
    """Permission bits for a new file at ``path``: those of the file it replaces, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: str | Path, flag: str = "--output", example: str = "out.json") -> Path:
    """Refuse, with a message naming ``flag``, a destination file that cannot be written; create its folder.

    Checked by creating and removing a temporary file in the destination folder (see module doc).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name such as {path / example}")
    try:
        if stream_target(path):
            return path
    except OSError as e:
        raise ValueError(f"cannot write {flag} {path}: {e}") from None
    folder = path.absolute().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_in(folder, path.name)
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        raise ValueError(f"cannot write {flag} {path}: {e.strerror or e} ({folder}); choose a writable place "
                         f"for {flag}") from None
    return path


def fallback_file(name: str, data: bytes) -> Path:
    """Keep ``data`` that could not be written where asked: a new file in the system's temporary folder
    (``$TMPDIR`` or /tmp), created with O_EXCL under a random name that starts with ``name``."""
    stem, dot, ext = name.rpartition(".")
    fd, tmp = tempfile.mkstemp(prefix=f"sleepcl-{stem or ext}-", suffix=f".{ext}" if dot else "")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(tmp)


def write_or_keep(path: Path, data: bytes, kept: str | None = None) -> tuple[Path, str | None]:
    """Write ``data`` to ``path`` atomically; if that fails after all, keep it and say where.

    ``kept`` says where the same data already is (for example the results store); without it the data goes to a
    :func:`fallback_file`. Returns ``(where the data is, None)`` or ``(where it is, the message to print)``.
    """
    try:
        return atomic_write_bytes(path, data), None
    except OSError as e:
        problem = f"could not write {path}: {e.strerror or e}"
    if kept is not None:
        return path, f"{problem}; nothing is lost: {kept}"
    try:
        saved = fallback_file(path.name, data)
    except OSError as e:
        raise ValueError(f"{problem}, nor a copy in the temporary folder ({e.strerror or e})") from None
    return saved, f"{problem}; kept the output in {saved} instead"
