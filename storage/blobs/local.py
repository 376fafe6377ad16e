"""Blobs on the local file system: the embedded default.

Layout: ``<root>/<key[:2]>/<key[2:4]>/<key>`` (two levels of 256 directories
keep each directory small), uploads in ``<root>/tmp/``. An upload is written
to a temporary file on the same file system, fsynced, renamed onto its final
name (atomic, so readers never see a partial blob) and its directory fsynced,
so a blob that ``put_stream`` returned survives a power cut.

Every file operation runs in a worker thread so the event loop never waits on
the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from storage.blobs import (
    BlobInfo,
    ContentHasher,
    ReadChecks,
    check_blob_key,
    is_blob_key,
    iter_chunks,
    limited,
)
from storage.errors import BlobNotFound, BlobStoreUnavailable

__all__ = ["LocalBlobStore"]

log = logging.getLogger(__name__)

WRITE_BATCH = 1024 * 1024
"""Bytes gathered from the stream before one trip to a worker thread."""

_HEX = frozenset("0123456789abcdef")


def _is_fanout_dir(name: str) -> bool:
    return len(name) == 2 and set(name) <= _HEX


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX; a no-op elsewhere)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _os_errors(action: str, path: Path, *, missing: bool = False) -> Iterator[None]:
    """Report disk failures (full, permissions, I/O) as the store being unavailable.

    With ``missing``, FileNotFoundError passes through: the caller means "no blob".
    """
    try:
        yield
    except OSError as exc:
        if missing and isinstance(exc, FileNotFoundError):
            raise
        raise BlobStoreUnavailable(f"blob store: cannot {action} {path}: {exc}") from exc


async def _shielded(fn: Callable[[], None]) -> None:
    """Run cleanup in a thread even while the calling task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(fn)


class LocalBlobStore(ReadChecks):
    """Content-addressed blobs under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_of(self, key: str) -> Path:
        """Where the blob ``key`` lives (whether or not it exists)."""
        check_blob_key(key)
        return self.root / key[:2] / key[2:4] / key

    # -- writing -----------------------------------------------------------

    async def put_stream(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Stream into a temporary file while hashing, then rename it onto its key."""
        tmp_path, out = await anyio.to_thread.run_sync(self._open_tmp)
        hasher = ContentHasher()
        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in limited(chunks, max_bytes):
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH:
                    batch, pending, pending_size = pending, [], 0
                    await anyio.to_thread.run_sync(self._write, out, tmp_path, hasher, batch)
            if pending:
                await anyio.to_thread.run_sync(self._write, out, tmp_path, hasher, pending)
            info = hasher.info()
            await anyio.to_thread.run_sync(self._commit, out, tmp_path, info.key)
        except BaseException:
            await _shielded(lambda: self._discard(out, tmp_path))
            raise
        return info

    async def put_bytes(self, data: bytes) -> BlobInfo:
        """Store bytes already in memory."""
        return await self.put_stream(iter_chunks(data, WRITE_BATCH))

    def _open_tmp(self) -> tuple[Path, BinaryIO]:
        with _os_errors("create a temporary file in", self._tmp):
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="upload-", dir=self._tmp)
            return Path(name), os.fdopen(fd, "wb")

    @staticmethod
    def _write(out: BinaryIO, path: Path, hasher: ContentHasher, batch: list[bytes]) -> None:
        with _os_errors("write", path):
            for chunk in batch:
                hasher.update(chunk)
                out.write(chunk)

    def _commit(self, out: BinaryIO, tmp_path: Path, key: str) -> None:
        """fsync, rename onto the key (refreshing its mtime if it existed), fsync the dir."""
        final = self.path_of(key)
        with _os_errors("store", final):
            out.flush()
            os.fsync(out.fileno())
            out.close()
            self._make_dirs(final.parent)
            os.replace(tmp_path, final)
            _fsync_dir(final.parent)

    def _make_dirs(self, directory: Path) -> None:
        """Create the two fan-out levels, fsyncing each parent that gained an entry."""
        for level in (directory.parent, directory):
            if not level.is_dir():
                level.mkdir(exist_ok=True)
                _fsync_dir(level.parent)

    @staticmethod
    def _discard(out: BinaryIO, tmp_path: Path) -> None:
        with contextlib.suppress(OSError):
            out.close()
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError as exc:  # swept later by written_before
            log.warning("could not remove temporary blob %s: %s", tmp_path, exc)

    # -- reading -----------------------------------------------------------

    async def _read(
        self, key: str, offset: int, length: int | None, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        path = self.path_of(key)
        first = chunk_size if length is None else min(chunk_size, length)
        try:  # opening and the first chunk in one thread hop: a small document needs no other
            source, data = await anyio.to_thread.run_sync(self._open_and_read, path, offset,
                                                          first)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None
        try:
            remaining = length
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                if data is None:
                    data = await anyio.to_thread.run_sync(self._read_chunk, source, path, want)
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data
                data = None
        finally:
            source.close()  # read-only file: closing does not touch the disk

    @staticmethod
    def _open_at(path: Path, offset: int) -> BinaryIO:
        with _os_errors("open", path, missing=True):
            source = path.open("rb")
            try:
                source.seek(offset)
            except BaseException:
                source.close()
                raise
            return source

    @classmethod
    def _open_and_read(cls, path: Path, offset: int, size: int) -> tuple[BinaryIO, bytes | None]:
        source = cls._open_at(path, offset)
        try:
            return source, cls._read_chunk(source, path, size) if size else None
        except BaseException:
            source.close()
            raise

    @staticmethod
    def _read_chunk(source: BinaryIO, path: Path, size: int) -> bytes:
        with _os_errors("read", path):
            return source.read(size)

    async def size(self, key: str) -> int | None:
        """The blob's size, or None if absent."""
        path = self.path_of(key)
        try:
            stat = await anyio.to_thread.run_sync(self._stat, path)
        except FileNotFoundError:
            return None
        return stat.st_size

    @staticmethod
    def _stat(path: Path) -> os.stat_result:
        with _os_errors("inspect", path, missing=True):
            return path.stat()

    async def delete(self, key: str) -> None:
        """Remove the blob if present (empty fan-out directories are kept)."""
        path = self.path_of(key)
        await anyio.to_thread.run_sync(self._unlink, path)

    @staticmethod
    def _unlink(path: Path) -> None:
        with _os_errors("delete", path, missing=True):
            path.unlink(missing_ok=True)

    # -- garbage collection ------------------------------------------------

    async def written_before(self, cutoff: float) -> AsyncGenerator[str, None]:
        """Yield keys whose file mtime is before ``cutoff``; sweep stale temporary files.

        The tree is scanned one top-level directory (1/256th) at a time, so
        memory stays bounded however many blobs there are.
        """
        await anyio.to_thread.run_sync(self._sweep_tmp, cutoff)
        for top in await anyio.to_thread.run_sync(self._fanout_dirs, self.root):
            for key in await anyio.to_thread.run_sync(self._scan, top, cutoff):
                yield key

    def _sweep_tmp(self, cutoff: float) -> None:
        """Remove temporary files last written before ``cutoff`` (crashed uploads)."""
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue

    @staticmethod
    def _fanout_dirs(directory: Path) -> list[Path]:
        try:
            with os.scandir(directory) as entries:
                names = [
                    e.name
                    for e in entries
                    if _is_fanout_dir(e.name) and e.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []
        return [directory / name for name in sorted(names)]

    def _scan(self, top: Path, cutoff: float) -> list[str]:
        keys: list[str] = []
        for sub in self._fanout_dirs(top):
            prefix = top.name + sub.name
            try:
                with os.scandir(sub) as entries:
                    for entry in entries:
                        if not (is_blob_key(entry.name) and entry.name.startswith(prefix)):
                            continue
                        try:
                            stat = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.st_mtime < cutoff:
                            keys.append(entry.name)
            except FileNotFoundError:
                continue
        keys.sort()
        return keys

    # -- lifecycle ---------------------------------------------------------

    async def ping(self) -> None:
        """Check the root can be written (creating it if needed)."""
        await anyio.to_thread.run_sync(self._check_writable)

    def _check_writable(self) -> None:
        with _os_errors("use", self.root):
            self._tmp.mkdir(parents=True, exist_ok=True)
            if not os.access(self._tmp, os.W_OK | os.X_OK):
                raise BlobStoreUnavailable(f"blob store: {self._tmp} is not writable")

    async def close(self) -> None:
        """Nothing to release: files are opened per operation."""
