"""Files in and out, safely.

Outputs are written atomically by :func:`write_atomic`: to a temporary file beside the
destination, renamed over it once complete, so a failure or an interrupt never leaves a
partial file. The temporary file is created the way ``open()`` creates one (mode
``0o666`` less the umask), not ``0o600`` as :func:`tempfile.mkstemp` makes it, so the
written file gets the permissions any other program's output would.

Inputs are checked by :func:`check_input_file` before anything opens them: reading a FIFO
blocks until a writer comes, a device or ``/dev/zero`` never ends; only regular files (or
symbolic links to them) are read.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Sequence

from eqsat_dnn.errors import EqsatError, InputError, OutputError

NAME_MAX = 255
"""Longest file name (bytes) assumed where the file system does not say."""

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a directory"``... for an ``st_mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_input_file(path: str | Path, error: type[EqsatError] = InputError, what: str = "") -> Path:
    """``path`` as a :class:`Path` if it names a regular file (links followed); ``error`` (one
    line: missing, a directory, a FIFO, a device, a socket, a name too long...) otherwise.
    Only stats the path: nothing is opened, so a FIFO cannot block."""
    path = Path(path)
    label = f"{_short(path)}: " if not what else f"{_short(path)}: {what} "
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{label}no such file") from None
    except OSError as exc:  # ENAMETOOLONG, EACCES, ELOOP...
        raise error(f"{label}cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{label}no such file (it is a directory)")
    if not stat.S_ISREG(mode):
        raise error(f"{label}is {file_kind(mode)}, not a regular file; refusing to read it")
    return path


def check_output_path(path: str | Path) -> None:
    """:class:`OutputError` for an output name the file system cannot hold (longer than its
    ``NAME_MAX``, or a path past ``PATH_MAX``) or an existing file that is not a regular one
    (a FIFO or a device: renaming over it would replace the device node itself)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    limit = _name_max(directory)
    size = len(os.fsencode(path.name))
    if size > limit:
        raise OutputError(f"{_short(path)}: file name too long ({size} bytes; the file system allows {limit})")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise OutputError(f"{_short(path)}: path too long ({exc.strerror})") from None
        return  # EACCES and the like: the write says it, with the same one line
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is {file_kind(mode)}, not a regular file; choose another output")


def write_atomic(path: str | Path, write: Callable[[Path], None], companions: Sequence[str] = (),
                 suffix: str = ".tmp") -> Path:
    """Write ``path`` by ``write(temporary)`` and a rename; returns ``path``.

    ``companions`` are suffixes of files ``write`` may create beside the temporary one
    (``temporary.name + suffix``): each is renamed to ``path.name + suffix`` before ``path``
    itself. ``suffix`` ends the temporary file's name (a writer may choose its format by it).
    On any failure (an interrupt included) every temporary file is removed and
    ``path`` is left as it was; an :class:`OSError` becomes an :class:`OutputError`.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        tmp = _create_temporary(directory, path.name, suffix)
    except OSError as exc:
        raise OutputError(f"{_short(path)}: cannot write here ({exc.strerror or exc})") from None
    extra = [(tmp.with_name(tmp.name + s), path.with_name(path.name + s)) for s in companions]
    try:
        write(tmp)
        for temporary, final in extra:
            if temporary.exists():
                os.replace(temporary, final)
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in [tmp, *(t for t, _ in extra)]:
            leftover.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"{_short(path)}: cannot write ({exc.strerror or exc})") from None
        raise
    return path


def _create_temporary(directory: Path, name: str, suffix: str = ".tmp") -> Path:
    """A new empty file ``.<name>.<random><suffix>`` in ``directory``, created with mode
    ``0o666`` so that the umask (and a default ACL) apply, as for ``open(..., "w")``."""
    stem = os.fsdecode(os.fsencode(name)[:150])  # a name near NAME_MAX still leaves room
    for _ in range(100):
        candidate = directory / f".{stem}.{secrets.token_hex(4)}{suffix}"
        try:
            create_new_file(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def create_new_file(path: str | Path) -> None:
    """Create ``path`` empty, failing if it exists, with the mode ``open()`` gives (``0o666``
    less the umask): for writers that would create it ``0o600`` themselves (onnx's external
    data writer does) but write into an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    os.close(os.open(path, flags, 0o666))


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def _short(path: Path) -> str:
    """A path for a message: an absurdly long one shortened, so the message stays one line's worth."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


__all__ = ["check_input_file", "check_output_path", "create_new_file", "file_kind", "write_atomic"]
