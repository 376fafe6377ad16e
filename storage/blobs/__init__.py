"""Content-addressed blob store: Binary content, streamed, on disk or in S3.

A blob's key is the SHA-256 of its bytes (64 lowercase hex characters), so
writing the same content twice stores it once, and a key can never point at
other bytes than the ones that produced it. Blobs are immutable; the only
other operations are reading a byte range, sizing, deleting and listing the
keys last written before some instant (for the garbage collector, which
deletes blobs no resource references any more: it must pick a cutoff well in
the past, since a re-upload of an existing key only refreshes its time).

Backends: :class:`storage.blobs.local.LocalBlobStore` (the embedded default)
and :class:`storage.blobs.s3.S3BlobStore`; :func:`open_blob_store` picks one
from a URL. Both import lazily from here, so a deployment on the local file
system never loads boto3.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from storage.errors import BlobTooLarge

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BlobInfo",
    "BlobStore",
    "ReadChecks",
    "check_blob_key",
    "is_blob_key",
    "limited",
    "open_blob_store",
]

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Size of the chunks :meth:`BlobStore.read` yields unless told otherwise."""

_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobInfo:
    """What a write produced: the content address and the facts FHIR wants."""

    key: str
    """SHA-256 of the bytes, 64 lowercase hex characters: the content address."""
    size: int
    """Number of bytes."""
    sha1: bytes
    """Raw 20-byte SHA-1 digest (FHIR ``Attachment.hash`` is its base64)."""


@runtime_checkable
class BlobStore(Protocol):
    """What the service needs of a blob store, whichever the backend.

    ``read`` and ``written_before`` return async generators: call them without
    ``await`` and iterate with ``async for``; a reader that may stop early wraps
    the generator in ``contextlib.aclosing`` so the file or connection is
    released at once. ``BlobNotFound`` for an absent key surfaces at the first
    iteration, not at the call; a caller that must answer 404 before sending
    headers calls ``size`` first (argument errors are raised at the call).
    Every method taking a key raises ``ValueError`` unless :func:`is_blob_key`.
    """

    async def put_stream(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Store a stream of bytes under its hash, never holding it whole in memory.

        The bytes go to a temporary object while being hashed and counted, and
        only then to their key, so a reader never sees a partial blob. More than
        ``max_bytes`` raises ``BlobTooLarge`` at once and leaves nothing behind.
        Writing a key that already exists refreshes its last-written time.
        """
        ...

    async def put_bytes(self, data: bytes) -> BlobInfo:
        """Store bytes already in memory (small content, tests)."""
        ...

    def read(
        self,
        key: str,
        offset: int = 0,
        length: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """Yield the bytes ``[offset, offset + length)`` in chunks, clipped at the end.

        ``length`` None reads to the end; an offset at or past the end yields
        nothing. ``BlobNotFound`` if the key is absent.
        """
        ...

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; deleting an absent key is not an error."""
        ...

    def written_before(self, cutoff: float) -> AsyncGenerator[str, None]:
        """Yield the keys last written before ``cutoff`` (epoch seconds).

        Also removes temporary leftovers (crashed uploads) older than the cutoff.
        Times may be truncated to the second (S3), so pick a cutoff with margin.
        """
        ...

    async def ping(self) -> None:
        """Raise if the store cannot be used (readiness probe)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def is_blob_key(text: str) -> bool:
    """True for exactly 64 lowercase hex characters; keys end up in paths and S3 keys."""
    return _KEY.fullmatch(text) is not None


def check_blob_key(key: str) -> str:
    """Return ``key`` if it is a blob key, else raise ``ValueError`` (no path traversal)."""
    if not isinstance(key, str) or not is_blob_key(key):
        raise ValueError(f"not a blob key (64 lowercase hex characters): {key!r}")
    return key


class ReadChecks:
    """``read`` for both back-ends: arguments checked at the call, bytes read lazily."""

    def read(
        self,
        key: str,
        offset: int = 0,
        length: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """Yield ``[offset, offset + length)`` of the blob in chunks (arguments checked now)."""
        check_blob_key(key)
        check_range(offset, length)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._read(key, offset, length, chunk_size)

    def _read(self, key: str, offset: int, length: int | None,
              chunk_size: int) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError


def check_range(offset: int, length: int | None) -> None:
    """Reject negative offsets and lengths rather than guess what they mean."""
    if offset < 0:
        raise ValueError(f"negative blob offset: {offset}")
    if length is not None and length < 0:
        raise ValueError(f"negative blob length: {length}")


async def limited(chunks: AsyncIterable[bytes], max_bytes: int | None) -> AsyncIterator[bytes]:
    """The non-empty chunks of an upload; ``BlobTooLarge`` as soon as they pass ``max_bytes``."""
    total = 0
    async for chunk in chunks:
        if not chunk:
            continue
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise BlobTooLarge(f"content larger than the limit of {max_bytes} bytes",
                               limit=max_bytes)
        yield chunk


class ContentHasher:
    """Running SHA-256, SHA-1 and byte count of a blob being written.

    hashlib releases the GIL on large buffers, so backends call ``update``
    from a worker thread together with the write.
    """

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1()  # FHIR Attachment.hash; not used for security
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        self._sha1.update(data)
        self.size += len(data)

    def info(self) -> BlobInfo:
        return BlobInfo(key=self._sha256.hexdigest(), size=self.size, sha1=self._sha1.digest())


async def iter_chunks(data: bytes, chunk_size: int) -> AsyncGenerator[bytes, None]:
    """Feed in-memory bytes to ``put_stream`` in slices (so large ones go multipart)."""
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield bytes(view[start : start + chunk_size])


_S3_OPTIONS = ("endpoint_url", "region", "addressing_style")


def open_blob_store(url: str | None, data_dir: Path) -> BlobStore:
    """Open the blob store a configuration URL names.

    - None or ``""``: ``LocalBlobStore(data_dir / "blobs")``;
    - ``file:///abs/path``: ``LocalBlobStore`` rooted there;
    - ``s3://bucket[/prefix][?endpoint_url=...&region=...&addressing_style=path]``:
      ``S3BlobStore``. Credentials (and by default endpoint and region) come from
      the standard AWS environment variables, which boto3 reads itself; the URL
      carries only non-secret options, and credentials in it are refused.
    """
    if not url:
        from storage.blobs.local import LocalBlobStore

        return LocalBlobStore(data_dir / "blobs")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"blob store URL {url!r}: a file URL needs an absolute path, "
                "as in file:///var/lib/carnet/blobs"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"blob store URL {url!r}: a file URL takes no query or fragment")
        path = Path(unquote(parts.path))
        if not path.is_absolute() or parts.path in ("", "/"):
            raise ValueError(f"blob store URL {url!r}: the path must be absolute and not /")
        from storage.blobs.local import LocalBlobStore

        return LocalBlobStore(path)
    if scheme == "s3":
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"blob store URL for bucket {parts.hostname!r}: no credentials in the URL; "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"blob store URL {url!r}: missing bucket name (s3://bucket/prefix)")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise ValueError(f"blob store URL {url!r}: malformed query: {exc}") from None
        unknown = sorted(set(query) - set(_S3_OPTIONS))
        if unknown:
            raise ValueError(
                f"blob store URL {url!r}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(_S3_OPTIONS)}"
            )
        options: dict[str, str | None] = {}
        for name in _S3_OPTIONS:
            values = query.get(name)
            if values is not None and (len(values) != 1 or not values[0]):
                raise ValueError(f"blob store URL {url!r}: give {name} exactly one non-empty value")
            options[name] = values[0] if values else None
        from storage.blobs.s3 import S3BlobStore

        return S3BlobStore(
            bucket,
            prefix=unquote(parts.path).strip("/"),
            endpoint_url=options["endpoint_url"],
            region=options["region"],
            addressing_style=options["addressing_style"],
        )
    raise ValueError(
        f"blob store URL {url!r}: unsupported scheme {parts.scheme!r}; "
        "use file:///absolute/path or s3://bucket/prefix (or nothing for the data directory)"
    )
