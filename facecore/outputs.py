"""The one rule for every file the tool writes on a user's behalf (annotated photos and videos,
contact sheets, cluster sheets and their index, bulk JSON lines, exports, evaluation reports),
and for every path it reads (special files refused).

Outputs:
- never an input, nor inside an input folder: compared by file identity (a symlink, a hard link
  or another case of the name on a case-insensitive disk is the same file) and by real path,
  case-insensitively;
- distinct across one run, case-insensitively (`unique`);
- written atomically (a temporary file beside the target, renamed over it);
- an existing file is replaced only when it is provably the tool's own: its directory's ledger
  (`.facetool-outputs.jsonl`, appended to by this module only) names it with the SHA-256 it had when the
  tool wrote it. Anything else (a user's photo, an index.html, a file edited since) is refused,
  before any byte changes. Files that are appended to (bulk JSON lines) carry a header line
  instead, checked by their owner before anything is cut or appended.

Reads: `special_file` says why a path is a FIFO, a device or a socket (os.stat, never an open:
opening a FIFO blocks); every reader refuses those by name.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from facecore.atomic import sha256_file
from facecore.errors import FaceToolError

__all__ = ["LEDGER", "InputSet", "OutputError", "check_not_input", "check_output", "check_output_dir", "is_ours", "output_file",
           "refuse_special", "special_file", "unique"]

log = logging.getLogger(__name__)

LEDGER = ".facetool-outputs.jsonl"
_LEDGER_HEADER = b'{"format": "facetool-outputs/1"}\n'  # the ledger's first line


class OutputError(FaceToolError):
    """An output path the tool may not write: an input, inside an input folder, taken by another
    output of the run, or an existing file that is not the tool's own."""


# ---- special files ------------------------------------------------------------------------------

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file(path: str | os.PathLike) -> str | None:
    """Why `path` is not a file to read (it is a FIFO, a device or a socket, after symlinks), else None
    (a regular file, a folder, or nothing there: the caller reports those). Never opens it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, what in _SPECIAL:
        if test(mode):
            return f"is {what}, not a regular file; refusing to read it"
    return None


def refuse_special(path: str | os.PathLike) -> None:
    """FaceToolError naming `path` when it is a FIFO, a device or a socket."""
    reason = special_file(path)
    if reason is not None:
        raise FaceToolError(f"{path}: {reason}")


# ---- never an input -----------------------------------------------------------------------------

def _real(p: Path) -> str:
    return os.path.normcase(os.path.realpath(p)).casefold()


def _identity(p: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _ancestors(p: Path) -> Iterator[Path]:
    """`p`'s real path, then each folder above it."""
    real = Path(os.path.realpath(p))
    yield real
    yield from real.parents


class InputSet:
    """The inputs of a run (files and folders), for quick "is this an input / inside one?" questions;
    build it once for a run with many outputs."""

    def __init__(self, inputs: Iterable[str | os.PathLike]) -> None:
        self.files: dict[str, Path] = {}  # casefolded real path -> as given
        self.folders: dict[str, Path] = {}
        self.ids: dict[tuple[int, int], Path] = {}
        self.names: dict[str, list[Path]] = {}  # casefolded file name -> inputs of that name
        for p in map(Path, inputs):
            (self.folders if p.is_dir() else self.files)[_real(p)] = p
            self.names.setdefault(p.name.casefold(), []).append(p)
            if p.is_dir() and (ident := _identity(p)) is not None:
                self.ids[ident] = p

    def clash(self, target: Path) -> str | None:
        """Why `target` may not be written: it is an input, or inside an input folder; else None."""
        real = _real(target)
        if real in self.files or real in self.folders:
            return f"is an input ({(self.files.get(real) or self.folders[real])})"
        ident = _identity(target)
        for p in self.names.get(target.name.casefold(), []):  # same file by another path (link, case)
            if ident is not None and _identity(p) == ident:
                return f"is the input {p}"
        for above in list(_ancestors(target))[1:]:
            folder = self.folders.get(_real(above)) or self.ids.get(_identity(above) or (-1, -1))
            if folder is not None:
                return f"is inside the input folder {folder}"
        return None


def _input_set(inputs: "InputSet | Iterable[str | os.PathLike]") -> InputSet:
    return inputs if isinstance(inputs, InputSet) else InputSet(inputs)


def check_output(target: str | os.PathLike, inputs: InputSet | Iterable[str | os.PathLike], *, what: str = "output") -> Path:
    """`target` as a Path, when the tool may write it: not an input, not inside an input folder, and
    either absent or the tool's own earlier output. OutputError naming it otherwise."""
    target = check_not_input(target, inputs, what=what)
    _check_replaceable(target, what)
    return target


def check_not_input(target: str | os.PathLike, inputs: InputSet | Iterable[str | os.PathLike], *,
                    what: str = "output") -> Path:
    """`target` as a Path, when it is not an input nor inside an input folder (for a file the tool
    appends to, whose owner checks its own header); OutputError naming it otherwise."""
    target = Path(target)
    clash = _input_set(inputs).clash(target)
    if clash is not None:
        raise OutputError(f"{target}: {clash}; the {what} is never written over or among the inputs, "
                          "choose a path outside them")
    return target


def check_output_dir(folder: str | os.PathLike, inputs: InputSet | Iterable[str | os.PathLike], *,
                     what: str = "output folder") -> Path:
    """`folder` as a Path, when the tool may write files in it: not an input, not inside an input
    folder, not an existing file. OutputError naming it otherwise."""
    folder = Path(folder)
    clash = _input_set(inputs).clash(folder)
    if clash is not None:
        raise OutputError(f"{folder}: {clash}; the {what} is never an input or inside one, choose a folder outside them")
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; the {what} must be a folder")
    return folder


def unique(target: str | os.PathLike, taken: set[str], suffix: str | None = None) -> Path:
    """`target`, or `<stem>-2<suffix>`, `-3`... beside it: the first whose name no earlier output of
    the run took (compared case-insensitively); claims it in `taken`. `suffix` (e.g. `.tracks.jpg`)
    is the part of the name kept after the number (default: the last suffix)."""
    target = Path(target)
    suffix = target.suffix if suffix is None else suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    n, out = 1, target
    while _real(out) in taken:
        n += 1
        out = target.with_name(f"{stem}-{n}{suffix}")
    taken.add(_real(out))
    return out


# ---- only the tool's own files are replaced -----------------------------------------------------

@contextmanager
def _locked_ledger(folder: Path) -> Iterator[Path]:
    """The ledger's path, with `folder` locked (flock on the folder itself) against other writers."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder / LEDGER
    finally:
        os.close(fd)


_parsed: dict[str, tuple[int, int, dict[str, str]]] = {}  # ledger path -> (inode, bytes read, {name: sha256})


def _ledger_lines(path: Path, chunk: bytes, first: bool) -> list[bytes]:
    """The complete lines of `chunk` (read from the ledger), its header line checked and left out when `first`."""
    lines = chunk[:chunk.rfind(b"\n") + 1].splitlines()
    if first:
        if not (lines[:1] == [_LEDGER_HEADER.strip()] or (not lines and _LEDGER_HEADER.startswith(chunk))):
            raise OutputError(f"{path}: is not this tool's record of its outputs; move it away to write here")
        lines = lines[1:]
    return lines


def _read_ledger(path: Path) -> dict[str, str]:
    """{file name: sha256} of the ledger at `path` ({} when there is none); OutputError if it is not ours.
    Append-only (a line per file written; the last line of a name wins), read incrementally: a run that
    writes thousands of files into one folder reads each line once."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: is not this tool's record of its outputs; move it away to write here")
    key = os.path.abspath(path)
    ino, done, files = _parsed.get(key, (-1, 0, {}))
    if ino != st.st_ino or st.st_size < done:
        done, files = 0, {}
    with open(path, "rb") as fh:
        fh.seek(done)
        chunk = fh.read()
    lines = _ledger_lines(path, chunk, first=done == 0)
    for line in lines:
        try:
            entry = json.loads(line)
            files[str(entry["name"])] = str(entry["sha256"])
        except (ValueError, KeyError, TypeError):  # a line torn by a kill (then ended by the next append)
            continue
    read = chunk.rfind(b"\n") + 1
    _parsed[key] = (st.st_ino, done + read, files)
    return files


def is_ours(target: str | os.PathLike) -> bool:
    """Whether `target` is a regular file that its folder's ledger records with its current SHA-256."""
    target = Path(target)
    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return False
        recorded = _read_ledger(target.parent / LEDGER).get(target.name)
        return recorded is not None and recorded == sha256_file(target)
    except OSError:
        return False


def _check_replaceable(target: Path, what: str) -> None:
    if target.name == LEDGER:
        raise OutputError(f"{target}: is this tool's record of its outputs, not an {what}")
    if not os.path.lexists(target):
        return
    if not is_ours(target):
        raise OutputError(f"{target}: exists and is not an earlier {what} of this tool (or was changed since); "
                          "it is left as it is: choose another name or move it away")


def _append(ledger: Path, name: str, digest: str) -> None:
    """One line appended to `ledger` (the caller holds the folder's lock): `name` was written with `digest`.
    Not fsynced: a line lost to a power cut only makes a rerun refuse to replace that file."""
    line = (json.dumps({"name": name, "sha256": digest}, ensure_ascii=False) + "\n").encode()
    fd = os.open(ledger, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            line = _LEDGER_HEADER + line
        elif os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a kill: end it first
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


@contextmanager
def output_file(target: str | os.PathLike, inputs: InputSet | Sequence[str | os.PathLike] = (), *,
                what: str = "output", mode: int = 0o600) -> Iterator[Path]:
    """A temporary path beside `target` (same suffix) to write the output to; on a clean exit it is
    fsynced and renamed over `target`, and recorded in the folder's ledger as the tool's own. Checked
    first (`check_output`, and the folder's ledger is ours): OutputError before anything is written
    when `target` is an input, inside an input folder, or an existing file that is not the tool's own;
    checked again under the folder's lock just before the rename."""
    target = check_output(target, inputs, what=what)
    _read_ledger(target.parent / LEDGER)  # a folder whose ledger is not ours gets nothing
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        digest = sha256_file(tmp)
        with _locked_ledger(target.parent) as ledger:
            _read_ledger(ledger)
            _check_replaceable(target, what)  # nothing put a file there since the first check
            os.replace(tmp, target)
            _append(ledger, target.name, digest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote %s", target)
