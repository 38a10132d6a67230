"""Output folders: written whole or not at all, replaced only when jarvis wrote them.

Every folder jarvis writes (a dataset, an adapter, an eval report, a tiny model) is built in
a hidden `.NAME.*.partial` folder beside it and swapped into place at the end. Around that:

- **Ownership.** Each output carries a `.jarvis-output.json` marker naming its kind. `--force`
  replaces only a folder with the marker of the same kind (or, for folders written before the
  marker existed, jarvis's own manifest), never one that is, holds or sits inside an input.
- **One writer.** An OS lock (`flock`) on `.NAME.lock` beside the target is held from the
  first check to the swap (and the file removed after), so of two concurrent writers
  exactly one wins.
- **Crash safety.** Where the OS can swap two folders in one step (Linux `renameat2`
  `RENAME_EXCHANGE`, macOS `renamex_np` `RENAME_SWAP`) the target always holds a complete
  folder. Elsewhere the swap is two renames through a fixed `.NAME.jarvis-old`, and the next
  run on the target restores it first. Stale partials of the target are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from jarvis.errors import OutputExistsError, OutputRefusedError, OutputWriteError

MARKER = ".jarvis-output.json"
# Kinds of output folder; --force replaces a folder only with a marker of the same kind.
KINDS = ("dataset", "adapter", "eval-report", "model")
# Folders written before the marker existed are recognised by the file jarvis put in them.
_LEGACY = {
    "dataset": ("manifest.json", "jarvis_version"),
    "adapter": ("adapter_config.json", "jarvis"),
    "eval-report": ("report.json", "jarvis_version"),
}


def marker_kind(folder: Path) -> str | None:
    """Return the kind of jarvis output `folder` is, or None when jarvis did not write it."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("written_by") == "jarvis":
        kind = data.get("kind")
        return kind if isinstance(kind, str) else None
    for kind, (name, key) in _LEGACY.items():
        try:
            legacy = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(legacy, dict) and key in legacy:
            return kind
    return None


Paths = Iterable[str | os.PathLike[str]]


def _related(dest: Path, inputs: Paths, data: Paths) -> str | None:
    """Why `dest` may not be written given what the run reads (is, holds, or sits inside it)."""
    data = list(data)
    for item in [*inputs, *data]:
        path = Path(item).expanduser()
        if not path.exists():
            continue
        src = path.resolve()
        if src == dest:
            return f"it is the input {item}"
        if src.is_relative_to(dest):
            return f"it holds the input {item}"
    for item in data:
        src = Path(item).expanduser().resolve()
        if src.is_dir() and dest.is_relative_to(src):
            return f"it is inside the input folder {item}, which the next run would read"
    return None


def check_output(
    dest: str | os.PathLike[str],
    *,
    kind: str,
    force: bool = False,
    inputs: Paths = (),
    data: Paths = (),
) -> Path:
    """Refuse, before any work, an output jarvis must not write (no lock taken).

    Args:
        dest: the output folder.
        kind: one of `KINDS`.
        force: replace an existing folder that jarvis wrote, of the same kind.
        inputs: files and folders the run reads; the output may not be, or hold, any of them.
        data: input data files and folders: the output may not be inside these either (a
            folder input would read the output on the next run).

    Returns:
        The absolute output path.

    Raises:
        OutputExistsError: `dest` exists and `force` is false.
        OutputRefusedError: `dest` is not a jarvis output of this kind, or is related to an input.
    """
    path = Path(dest).expanduser().absolute()
    resolved = path.resolve()
    why = _related(resolved, inputs, data)
    if why is not None:
        raise OutputRefusedError(f"{dest}: refusing to write the {kind} there: {why}")
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputExistsError(f"{dest} exists; pass --force to replace it")
        if path.is_symlink() or not path.is_dir():
            raise OutputRefusedError(
                f"{dest}: --force replaces only a folder jarvis wrote; this is not a folder"
            )
        found = marker_kind(path)
        if found is None:
            raise OutputRefusedError(
                f"{dest}: --force replaces only a folder jarvis wrote, and this one has no "
                f"{MARKER} (nor a jarvis manifest); nothing was touched"
            )
        if found != kind:
            raise OutputRefusedError(
                f"{dest}: holds a jarvis {found}, not a {kind}; refusing to replace it"
            )
    return path


# --- the OS primitives ----------------------------------------------------------------------


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or filesystem cannot.

    Raises:
        OSError: the swap failed for another reason (permissions, a missing path).
    """
    if _LIBC is None:
        return False
    if sys.platform.startswith("linux"):
        fn = getattr(_LIBC, "renameat2", None)
        if fn is None:
            return False
        at_fdcwd, rename_exchange = -100, 2
        rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin":
        fn = getattr(_LIBC, "renamex_np", None)
        if fn is None:
            return False
        rc = fn(os.fsencode(a), os.fsencode(b), 0x2)  # RENAME_SWAP
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _lock(path: Path) -> IO[bytes] | None:
    """Take an exclusive, non-blocking lock on `path`; None when another process holds it.

    The lock file is removed on release (`_unlock`), so a winner re-checks after locking that
    the path is still the file it locked: a loser may have opened it just before the unlink.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is not enforced there
        return path.open("ab")
    for _ in range(10):
        fh = path.open("ab")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fh
        fh.close()  # the previous holder removed it: lock the new one
    return None


def _unlock(path: Path, fh: IO[bytes]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fh.close()


def _names(dest: Path) -> tuple[Path, Path, str]:
    """(lock file, old folder of a two-rename swap, glob of partials) beside `dest`."""
    return (
        dest.parent / f".{dest.name}.lock",
        dest.parent / f".{dest.name}.jarvis-old",
        f".{dest.name}.*.partial",
    )


def recover(dest: Path) -> str | None:
    """Finish what a killed run on `dest` left (the caller holds its lock).

    Returns:
        A note when a previous output was restored, else None.
    """
    _, old, partials = _names(dest)
    note = None
    if old.is_dir() and marker_kind(old) is not None:
        if not dest.exists():
            os.replace(old, dest)
            note = f"restored {dest} from {old.name}, left by a run that was killed mid-swap"
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in dest.parent.glob(partials):
        # Only this target's partials, and only ours: marked, or empty (killed before marking).
        if stale.is_dir() and (marker_kind(stale) is not None or not any(stale.iterdir())):
            shutil.rmtree(stale, ignore_errors=True)
    return note


def write_marker(folder: Path, kind: str) -> None:
    """Write the ownership marker into an output folder."""
    from jarvis import __version__

    body = {"written_by": "jarvis", "kind": kind, "jarvis_version": __version__}
    (folder / MARKER).write_text(json.dumps(body, sort_keys=True) + "\n", encoding="utf-8")


def _write_error(dest: Path, exc: OSError) -> OutputWriteError:
    reason = exc.strerror or str(exc)
    where = exc.filename or dest
    return OutputWriteError(f"{dest}: cannot write the output ({where}: {reason}); nothing changed")


@contextlib.contextmanager
def atomic_dir(
    dest: str | os.PathLike[str],
    *,
    kind: str,
    force: bool = False,
    inputs: Paths = (),
    data: Paths = (),
) -> Iterator[Path]:
    """Yield a marked temp folder beside `dest`; on success it replaces `dest` in one step.

    The target's lock is held throughout, a killed run's leftovers are cleaned up first, and
    on any error (or a kill) `dest` keeps its previous content.

    Args:
        dest: the output folder.
        kind: one of `KINDS`; recorded in the marker, checked against an existing folder.
        force: replace an existing jarvis output of the same kind.
        inputs: paths the run reads (see `check_output`).
        data: input data paths (see `check_output`).

    Raises:
        OutputExistsError: `dest` exists and `force` is false, or another jarvis process is
            writing it.
        OutputRefusedError: `dest` is not ours to replace (see `check_output`).
        OutputWriteError: the folder cannot be written (permissions, a full disk).
    """
    path = Path(dest).expanduser().absolute()
    lock_path, old, _ = _names(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(lock_path)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    if lock is None:
        raise OutputExistsError(f"{dest}: another jarvis process is writing it; try again later")
    try:
        note = recover(path)
        if note is not None:
            print(f"note: {note}", file=sys.stderr)
        check_output(dest, kind=kind, force=force, inputs=inputs, data=data)
        try:
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
            )
            # mkdtemp makes the folder 0700; an output gets the user's usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            write_marker(tmp, kind)
        except OSError as exc:
            raise _write_error(path, exc) from exc
        try:
            yield tmp
            _swap(tmp, path, old)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(path, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        _unlock(lock_path, lock)


def _swap(tmp: Path, dest: Path, old: Path) -> None:
    """Put `tmp` at `dest`; the previous `dest` (if any) is removed afterwards."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # holds the previous output now
        return
    # Two renames: a kill between them leaves `old`, which `recover` puts back.
    os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
