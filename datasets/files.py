"""Writing a file so that an interrupt or a crash never leaves it half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it.
UMASK = _process_umask()


def as_if_created(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path``, made by mkstemp or mkdtemp (0600 / 0700), the permissions ``open`` or
    ``mkdir`` would have given it under the process's umask, so that a file written through a
    temporary one is as readable by others as any other file the user makes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, so the rename is atomic) to write to;
    renamed onto ``path`` when the block ends without an exception, removed otherwise. Readers
    see the old file or the complete new one, never a torn one. Parents are created; the new
    file has the permissions a plain ``open`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    as_if_created(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """``open(path, mode)`` through :func:`atomic_path`, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text, encoding="utf-8")`` through :func:`atomic_open`."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_write_csv(path: str | os.PathLike, columns: Iterable[str], rows: Iterable
                     ) -> Path:
    """A CSV of ``columns`` then ``rows`` written to ``path`` through :func:`atomic_open`."""
    import csv

    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(rows)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays) -> Path:
    """``numpy.savez_compressed`` to ``path`` through :func:`atomic_open`: a crash leaves the
    old file, and a file linked elsewhere (a workdir copied with hard links) is replaced, not
    written over."""
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig(path, format="png", **kwargs)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **kwargs)
    return Path(path)


@contextmanager
def exclusive_lock(lock: str | os.PathLike, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock (``fcntl.flock``) on the file ``lock`` for the block. With
    ``busy`` (what a holder is doing, e.g. "another scan is writing c.csv") a held lock is a
    ValueError at once, naming the lock and the process that holds it; without, the block waits
    for it. The OS releases the lock when its process ends, however it ends, so an interrupted
    or killed holder never blocks the next one; the file is removed when the block ends."""
    import fcntl
    import sys

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not yet written its id"
            handle.close()
            raise ValueError(f"{busy} (lock {lock}, held by {holder}); wait for it or stop it "
                             "first") from None
        try:  # the holder before us may have removed the file we opened: lock the new one
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.truncate(0)  # who holds it, for the message of a process refused
        handle.write(f"pid {os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
        handle.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: a later holder locks a new file
        handle.close()  # releases the lock
