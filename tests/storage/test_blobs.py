"""The content-addressed blob store, on the local file system and on a real S3 server.

Every behaviour runs on both backends. S3 is moto's server, started once per
session in this process on a free loopback port (``s3_server`` yields its
endpoint URL; ``aws_env`` sets dummy credentials). Each S3 test gets a bucket
of its own, created by the store on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from storage.blobs import BlobInfo, BlobStore, is_blob_key, open_blob_store
from storage.blobs.local import LocalBlobStore
from storage.blobs.s3 import PART_SIZE, S3BlobStore
from storage.errors import BlobNotFound, BlobStoreUnavailable, BlobTooLarge, StorageError
from tests.conftest import S3_REGION as REGION

MiB = 1024 * 1024


# -- fixtures --------------------------------------------------------------


@dataclass
class Backend:
    """A store plus test-only views of what it left in its storage."""

    name: str
    store: BlobStore
    stored: Callable[[], list[str]]
    """Names of every stored blob object/file (temporary ones excluded)."""
    leftovers: Callable[[], list[str]]
    """Temporary files/objects and unfinished multipart uploads."""
    put_raw: Callable[[str, bytes], None]
    """Write a file/object at a path relative to the store's root/prefix, bypassing it."""
    raw: Any = None


def _local_backend(root: Path) -> Backend:
    def stored() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).parts[0] != "tmp")

    def leftovers() -> list[str]:
        tmp = root / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []

    def put_raw(name: str, data: bytes) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Backend("local", LocalBlobStore(root), stored, leftovers, put_raw)


def _s3_backend(endpoint: str, session: Any) -> Backend:
    bucket = f"carnet-test-{uuid.uuid4().hex[:12]}"
    prefix = "blobs/v1"
    store = S3BlobStore(bucket, prefix=prefix, endpoint_url=endpoint, region=REGION,
                        session=session)
    client = session.client("s3", endpoint_url=endpoint, region_name=REGION)

    def keys(under: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=under)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def stored() -> list[str]:
        return [k for k in keys(f"{prefix}/") if not k.startswith(f"{prefix}/tmp/")]

    def leftovers() -> list[str]:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
        return keys(f"{prefix}/tmp/") + [f"upload:{u['Key']}" for u in uploads]

    def put_raw(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)

    return Backend("s3", store, stored, leftovers, put_raw, raw=(client, bucket, prefix))


@pytest.fixture(params=["local", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "local":
        b = _local_backend(tmp_path / "blobs")
    else:
        b = _s3_backend(request.getfixturevalue("s3_server"),
                        request.getfixturevalue("s3_session"))
    try:
        yield b
    finally:
        await b.store.close()
        if b.raw is not None:
            b.raw[0].close()


# -- helpers ---------------------------------------------------------------


async def stream(*chunks: bytes, consumed: list[int] | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if consumed is not None:
            consumed.append(len(chunk))
        yield chunk
        await asyncio.sleep(0)


async def read_all(store: BlobStore, key: str, offset: int = 0, length: int | None = None,
                   chunk_size: int = 256 * 1024) -> bytes:
    return b"".join([c async for c in store.read(key, offset, length, chunk_size=chunk_size)])


async def keys_before(store: BlobStore, cutoff: float) -> list[str]:
    return sorted([k async for k in store.written_before(cutoff)])


def expected_info(data: bytes) -> BlobInfo:
    return BlobInfo(hashlib.sha256(data).hexdigest(), len(data), hashlib.sha1(data).digest())


# -- writing and reading ---------------------------------------------------


async def test_put_bytes_round_trip(backend: Backend) -> None:
    data = b"%PDF-1.7 compte rendu de consultation\n" * 100
    info = await backend.store.put_bytes(data)
    assert info == expected_info(data)
    assert len(info.key) == 64 and is_blob_key(info.key)
    assert len(info.sha1) == 20
    assert await read_all(backend.store, info.key) == data
    assert await backend.store.size(info.key) == len(data)
    assert backend.leftovers() == []


async def test_put_stream_of_many_chunks(backend: Backend) -> None:
    chunks = [os.urandom(n) for n in (1, 0, 65_536, 700_000, 3, 1_500_000, 12_345)]
    data = b"".join(chunks)
    info = await backend.store.put_stream(stream(*chunks))
    assert info == expected_info(data)
    pieces = [c async for c in backend.store.read(info.key, chunk_size=100_000)]
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 100_000 for p in pieces)
    assert len(pieces) >= math.ceil(len(data) / 100_000)
    assert backend.leftovers() == []


async def test_empty_blob(backend: Backend) -> None:
    info = await backend.store.put_stream(stream())
    assert info == expected_info(b"")
    assert await read_all(backend.store, info.key) == b""
    assert await read_all(backend.store, info.key, 0, 10) == b""
    assert await backend.store.size(info.key) == 0


async def test_same_content_is_stored_once(backend: Backend) -> None:
    data = b"same bytes, same address"
    first = await backend.store.put_bytes(data)
    second = await backend.store.put_stream(stream(data[:5], data[5:]))
    third, fourth = await asyncio.gather(backend.store.put_bytes(data),
                                         backend.store.put_bytes(data))
    assert first == second == third == fourth
    assert len(backend.stored()) == 1
    assert backend.stored()[0].endswith(first.key)
    assert backend.leftovers() == []


async def test_layout(backend: Backend) -> None:
    info = await backend.store.put_bytes(b"where does it go")
    k = info.key
    expected = f"{k[:2]}/{k[2:4]}/{k}" if backend.name == "local" else f"blobs/v1/{k[:2]}/{k}"
    assert backend.stored() == [expected]


async def test_large_upload(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """17 MiB: on S3 a multipart upload of 8 + 8 + 1 MiB parts, read back whole."""
    data = os.urandom(17 * MiB)
    part_sizes: list[int] = []
    if isinstance(backend.store, S3BlobStore):
        client = backend.store._client
        real_upload_part = client.upload_part

        def upload_part(**kwargs: Any) -> Any:
            part_sizes.append(len(kwargs["Body"]))
            return real_upload_part(**kwargs)

        monkeypatch.setattr(client, "upload_part", upload_part)
    chunks = [data[i:i + MiB] for i in range(0, len(data), MiB)]
    info = await backend.store.put_stream(stream(*chunks))
    assert info == expected_info(data)
    if backend.name == "s3":
        assert part_sizes == [PART_SIZE, PART_SIZE, MiB]
    assert await backend.store.size(info.key) == len(data)
    whole = await read_all(backend.store, info.key, chunk_size=MiB)
    assert hashlib.sha256(whole).hexdigest() == info.key
    around_part_boundary = await read_all(backend.store, info.key, PART_SIZE - 3, 6)
    assert around_part_boundary == data[PART_SIZE - 3:PART_SIZE + 3]
    assert backend.leftovers() == []


DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable in a window


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (0, 1024),
        (10, 20),
        (100, None),  # to the end
        (1023, None),  # the last byte
        (1023, 1),
        (1000, 100),  # past the end: clipped
        (0, 5000),
        (1024, None),  # at the end: nothing
        (2000, 10),  # beyond the end: nothing
        (5, 0),
    ],
)
async def test_ranges(backend: Backend, offset: int, length: int | None) -> None:
    info = await backend.store.put_bytes(DATA)
    end = None if length is None else offset + length
    assert await read_all(backend.store, info.key, offset, length, chunk_size=7) == DATA[offset:end]


async def test_read_in_small_chunks_stops_early(backend: Backend) -> None:
    info = await backend.store.put_bytes(DATA)
    async with contextlib.aclosing(backend.store.read(info.key, 1, chunk_size=10)) as reader:
        assert await anext(reader) == DATA[1:11]
        assert await anext(reader) == DATA[11:21]


async def test_negative_range_is_refused(backend: Backend) -> None:
    info = await backend.store.put_bytes(DATA)
    with pytest.raises(ValueError):
        backend.store.read(info.key, -1)
    with pytest.raises(ValueError):
        backend.store.read(info.key, 0, -5)


# -- limits and failures ---------------------------------------------------


@pytest.mark.parametrize("total_mib", [3, 12], ids=["single-part", "multipart"])
async def test_too_large_leaves_nothing_behind(backend: Backend, total_mib: int) -> None:
    consumed: list[int] = []
    limit = (total_mib - 1) * MiB + 1000
    chunks = [os.urandom(MiB) for _ in range(total_mib)] + [b"never reached"]
    with pytest.raises(BlobTooLarge) as raised:
        await backend.store.put_stream(stream(*chunks, consumed=consumed), max_bytes=limit)
    assert raised.value.limit == limit
    assert isinstance(raised.value, StorageError)
    assert len(consumed) == total_mib  # stopped at the chunk that crossed the limit
    assert backend.leftovers() == []
    assert backend.stored() == []


async def test_exactly_max_bytes_is_accepted(backend: Backend) -> None:
    data = b"x" * 1000
    info = await backend.store.put_stream(stream(data[:600], data[600:]), max_bytes=1000)
    assert info.size == 1000


async def test_failing_source_leaves_nothing_behind(backend: Backend) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(9 * MiB)  # on S3, a multipart upload has started
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await backend.store.put_stream(broken())
    assert backend.leftovers() == []
    assert backend.stored() == []


async def test_cancelled_upload_leaves_nothing_behind(backend: Backend) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield os.urandom(9 * MiB)
        started.set()
        await asyncio.Event().wait()  # the client stalls forever
        yield b"unreachable"

    task = asyncio.create_task(backend.store.put_stream(slow()))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.leftovers() == []
    assert backend.stored() == []


async def test_absent_key(backend: Backend) -> None:
    key = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound):
        await read_all(backend.store, key)
    with pytest.raises(BlobNotFound):
        await read_all(backend.store, key, 10, 0)
    assert await backend.store.size(key) is None
    await backend.store.delete(key)  # absent is fine


async def test_delete(backend: Backend) -> None:
    keep = await backend.store.put_bytes(b"keep me")
    gone = await backend.store.put_bytes(b"delete me")
    await backend.store.delete(gone.key)
    assert await backend.store.size(gone.key) is None
    with pytest.raises(BlobNotFound):
        await read_all(backend.store, gone.key)
    assert await read_all(backend.store, keep.key) == b"keep me"
    assert len(backend.stored()) == 1
    await backend.store.delete(gone.key)


BAD_KEYS = [
    "../etc/passwd",
    "A" * 64,
    hashlib.sha256(b"x").hexdigest().upper(),
    "a" * 63,
    "a" * 65,
    "",
    "../" + "a" * 61,
    "a" * 63 + "\n",
    "g" * 64,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused(backend: Backend, key: str) -> None:
    assert not is_blob_key(key)
    with pytest.raises(ValueError):
        backend.store.read(key)
    with pytest.raises(ValueError):
        await backend.store.size(key)
    with pytest.raises(ValueError):
        await backend.store.delete(key)


def test_is_blob_key() -> None:
    assert is_blob_key(hashlib.sha256(b"x").hexdigest())
    assert is_blob_key("0" * 64)
    assert not any(is_blob_key(k) for k in BAD_KEYS)


# -- garbage-collection support --------------------------------------------


async def test_written_before_future_and_past(backend: Backend) -> None:
    a = await backend.store.put_bytes(b"a")
    b = await backend.store.put_bytes(b"b")
    backend.put_raw(f"{a.key[:2]}/not-a-blob", b"ignored")  # foreign files are never listed
    assert await keys_before(backend.store, time.time() + 60) == sorted([a.key, b.key])
    assert await keys_before(backend.store, time.time() - 3600) == []
    await backend.store.delete(a.key)
    assert await keys_before(backend.store, time.time() + 60) == [b.key]


async def test_local_rewrite_refreshes_last_written(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old, fresh = await store.put_bytes(b"old"), await store.put_bytes(b"fresh")
    long_ago = time.time() - 7 * 86400
    os.utime(store.path_of(old.key), (long_ago, long_ago))
    assert await keys_before(store, time.time() - 3600) == [old.key]
    assert await store.put_bytes(b"old") == old  # re-upload of the same content
    assert await keys_before(store, time.time() - 3600) == []
    assert await keys_before(store, time.time() + 1) == sorted([old.key, fresh.key])


async def test_s3_rewrite_refreshes_last_written(s3_server: str, s3_session: Any) -> None:
    """LastModified has one-second resolution: straddle a second boundary."""
    b = _s3_backend(s3_server, s3_session)
    try:
        info = await b.store.put_bytes(b"written twice")
        cutoff = math.floor(time.time()) + 1
        await asyncio.sleep(cutoff - time.time() + 0.05)
        assert await keys_before(b.store, cutoff) == [info.key]
        assert await b.store.put_bytes(b"written twice") == info
        assert await keys_before(b.store, cutoff) == []
    finally:
        await b.store.close()
        b.raw[0].close()


async def test_written_before_sweeps_stale_temporaries(backend: Backend) -> None:
    if isinstance(backend.store, LocalBlobStore):
        tmp = backend.store.root / "tmp"
        tmp.mkdir(parents=True)
        (tmp / "upload-crashed").write_bytes(b"partial")
        (tmp / "upload-running").write_bytes(b"in progress")
        long_ago = time.time() - 86400
        os.utime(tmp / "upload-crashed", (long_ago, long_ago))
        cutoff = time.time() - 3600
        expected = ["upload-running"]
    else:
        client, bucket, prefix = backend.raw
        await backend.store.ping()  # creates the bucket
        client.put_object(Bucket=bucket, Key=f"{prefix}/tmp/crashed", Body=b"partial")
        client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/tmp/crashed-multipart")
        cutoff = time.time() + 60  # moto cannot backdate: everything counts as stale
        expected = []
    assert len(backend.leftovers()) == 2
    assert await keys_before(backend.store, cutoff) == []
    assert backend.leftovers() == expected


# -- opening and health ----------------------------------------------------


async def test_ping(backend: Backend) -> None:
    await backend.store.ping()
    assert isinstance(backend.store, BlobStore)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_s3_unreachable(s3_session: Any) -> None:
    store = S3BlobStore("nowhere", endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                        region=REGION, max_attempts=1, session=s3_session)
    try:
        with pytest.raises(BlobStoreUnavailable, match="nowhere"):
            await store.ping()
        with pytest.raises(BlobStoreUnavailable):
            await store.put_bytes(b"x")
    finally:
        await store.close()


async def test_s3_missing_bucket_without_creation(s3_server: str, s3_session: Any) -> None:
    store = S3BlobStore(f"absent-{uuid.uuid4().hex[:8]}", endpoint_url=s3_server, region=REGION,
                        create_bucket=False, session=s3_session)
    try:
        with pytest.raises(BlobStoreUnavailable, match="does not exist"):
            await store.ping()
    finally:
        await store.close()


async def test_local_ping_fails_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "blobs").write_text("not a directory")
    with pytest.raises(BlobStoreUnavailable):
        await LocalBlobStore(tmp_path / "blobs").ping()


def test_open_local(tmp_path: Path) -> None:
    for url in (None, ""):
        store = open_blob_store(url, tmp_path)
        assert isinstance(store, LocalBlobStore)
        assert store.root == tmp_path / "blobs"
    store = open_blob_store("file:///var/lib/carnet%20data/blobs", tmp_path)
    assert isinstance(store, LocalBlobStore)
    assert store.root == Path("/var/lib/carnet data/blobs")
    assert not (tmp_path / "blobs").exists()  # opening does no I/O


async def test_open_s3(aws_env: None, tmp_path: Path) -> None:
    store = open_blob_store(
        "s3://carnet-docs/prod/blobs/?endpoint_url=http://127.0.0.1:9000&region=eu-west-3",
        tmp_path,
    )
    try:
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix) == ("carnet-docs", "prod/blobs")
        assert store._client.meta.endpoint_url == "http://127.0.0.1:9000"
        assert store._client.meta.region_name == "eu-west-3"
        assert store.object_key("ab" + "0" * 62) == "prod/blobs/ab/ab" + "0" * 62
    finally:
        await store.close()
    bare = open_blob_store("s3://carnet-docs", tmp_path)
    try:
        assert isinstance(bare, S3BlobStore)
        assert bare.prefix == ""
        assert bare.object_key("cd" + "1" * 62) == "cd/cd" + "1" * 62
    finally:
        await bare.close()


async def test_open_s3_from_the_environment(
    s3_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Endpoint, region and credentials from the AWS variables, as in a deployment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    bucket = f"carnet-env-{uuid.uuid4().hex[:8]}"
    store = open_blob_store(f"s3://{bucket}/docs", tmp_path)
    try:
        info = await store.put_bytes(b"configured by the environment")
        assert await read_all(store, info.key) == b"configured by the environment"
    finally:
        await store.close()
    client = boto3.session.Session().client("s3")
    try:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        location = client.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    finally:
        client.close()
    assert keys == [f"docs/{info.key[:2]}/{info.key}"]
    assert location == REGION


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/blobs", "unsupported scheme"),
        ("/var/lib/carnet/blobs", "unsupported scheme"),
        ("file://relative/blobs", "absolute"),
        ("file:///", "absolute"),
        ("s3://", "missing bucket"),
        ("s3:///prefix", "missing bucket"),
        ("s3://key:secret@bucket/prefix", "no credentials"),
        ("s3://bucket?endpoint=http://x", "unknown option"),
        ("s3://bucket?region=a&region=b", "exactly one"),
        ("s3://bucket?addressing_style=sideways", "addressing_style"),
    ],
)
def test_open_refuses(url: str, message: str, tmp_path: Path, aws_env: None) -> None:
    with pytest.raises(ValueError, match=message):
        open_blob_store(url, tmp_path)
