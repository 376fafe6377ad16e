"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW...).

Layout: ``<prefix>/<key[:2]>/<key>``; uploads go first to
``<prefix>/tmp/<uuid4>`` because the key is only known once every byte has
been hashed: below ``PART_SIZE`` with one PutObject, otherwise as a multipart
upload of ``PART_SIZE`` parts (aborted on any error, cancellation or
``BlobTooLarge``). The temporary object is then copied onto its key and
deleted. CopyObject handles up to 5 GiB; larger blobs are copied with boto3's
managed (multipart) copy. With 8 MiB parts and S3's 10,000 parts per upload
a blob can reach about 78 GiB.

The bucket is created on first use if it does not exist (handy for tests and
a fresh MinIO); pass ``create_bucket=False`` to only check it.
:meth:`S3BlobStore.ensure_bucket` does that step explicitly (at startup, say).

boto3 is synchronous: every call runs in a worker thread. The client is
thread-safe and shared. Endpoint, region and credentials come from the
standard AWS environment variables unless given; with a custom endpoint
(MinIO, moto) path-style addressing is used unless told otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Any

import anyio
import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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

__all__ = ["COPY_OBJECT_LIMIT", "PART_SIZE", "S3BlobStore"]

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
"""Multipart part size, and the size from which an upload goes multipart."""

COPY_OBJECT_LIMIT = 5 * 1024**3
"""Largest object a single CopyObject may copy (S3's limit)."""

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
_ADDRESSING_STYLES = ("auto", "path", "virtual")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore(ReadChecks):
    """Content-addressed blobs in ``bucket`` under ``prefix``."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str | None = None,
        create_bucket: bool = True,
        max_attempts: int = 3,
        session: Any = None,
    ) -> None:
        """``session``: a ``boto3.session.Session`` to share (clients made from one
        session share its parsed service models: much faster to create); by
        default a new one, which reads the AWS environment variables.
        """
        if not bucket or "/" in bucket:
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        if addressing_style is not None and addressing_style not in _ADDRESSING_STYLES:
            raise ValueError(
                f"S3 addressing_style must be one of {', '.join(_ADDRESSING_STYLES)}, "
                f"not {addressing_style!r}"
            )
        custom_endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
            "AWS_ENDPOINT_URL"
        )
        if addressing_style is None and custom_endpoint:
            addressing_style = "path"  # MinIO & co. rarely have wildcard DNS for buckets
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._tmp = f"{self._base}tmp/"
        self._create_bucket = create_bucket
        self._bucket_ready = False
        self._bucket_lock = anyio.Lock()
        config = Config(
            s3={"addressing_style": addressing_style} if addressing_style else {},
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
            # No extra checksum pass over each part (botocore >= 1.36 adds one by default):
            # it copies the part again, and the SHA-256 key already proves the content.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        if session is None:
            session = boto3.session.Session()
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def object_key(self, key: str) -> str:
        """The S3 key of the blob ``key``."""
        check_blob_key(key)
        return f"{self._base}{key[:2]}/{key}"

    # -- plumbing ----------------------------------------------------------

    def _unavailable(self, action: str, exc: Exception) -> BlobStoreUnavailable:
        return BlobStoreUnavailable(f"S3 {action} failed (bucket {self.bucket!r}): {exc}")

    async def _call(
        self,
        action: str,
        fn: Callable[..., Any],
        /,
        *,
        expect: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> Any:
        """Run one boto3 call in a thread; ClientErrors with an ``expect`` code pass through.

        Anything else (denied, throttled after retries, unreachable) becomes
        BlobStoreUnavailable.
        """
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
        except ClientError as exc:
            if _code(exc) in expect:
                raise
            raise self._unavailable(action, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(action, exc) from exc

    async def _cleanup(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> None:
        """Best-effort cleanup that runs even while the task is being cancelled."""
        with anyio.CancelScope(shield=True):
            try:
                await self._call(action, fn, Bucket=self.bucket, **kwargs)
            except BlobStoreUnavailable as exc:  # swept later by written_before
                log.warning("blob store cleanup: %s", exc)

    async def ensure_bucket(self) -> None:
        """Check the bucket exists, creating it if missing and allowed; once per store."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                await self._call("HeadBucket", self._client.head_bucket, expect=_NO_BUCKET,
                                 Bucket=self.bucket)
            except ClientError as exc:
                if not self._create_bucket:
                    raise BlobStoreUnavailable(f"S3 bucket {self.bucket!r} does not exist") from exc
                await self._make_bucket()
            self._bucket_ready = True

    async def _make_bucket(self) -> None:
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region not in ("us-east-1", "aws-global"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._call("CreateBucket", self._client.create_bucket,
                             expect=frozenset({"BucketAlreadyOwnedByYou"}), **kwargs)
        except ClientError:
            return  # created meanwhile by another process of ours
        log.info("created S3 bucket %r", self.bucket)

    # -- writing -----------------------------------------------------------

    async def put_stream(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Upload to a temporary object while hashing, then copy it onto its key."""
        await self.ensure_bucket()
        hasher = ContentHasher()
        tmp_key = f"{self._tmp}{uuid.uuid4().hex}"
        upload_id: str | None = None
        tmp_may_exist = False
        parts: list[dict[str, Any]] = []
        pending: list[bytes] = []  # chunks not yet uploaded; joined once into each part
        pending_size = 0
        try:
            async for chunk in limited(chunks, max_bytes):
                pending.append(chunk)
                pending_size += len(chunk)
                while pending_size >= PART_SIZE:
                    joined = b"".join(pending)
                    part, rest = joined[:PART_SIZE], joined[PART_SIZE:]
                    del joined
                    pending, pending_size = ([rest] if rest else []), len(rest)
                    if upload_id is None:
                        created = await self._call(
                            "CreateMultipartUpload", self._client.create_multipart_upload,
                            Bucket=self.bucket, Key=tmp_key,
                        )
                        upload_id = str(created["UploadId"])
                    parts.append(await self._upload_part(tmp_key, upload_id, len(parts) + 1,
                                                         part, hasher))
                    del part
            if upload_id is None:
                tmp_may_exist = True
                await self._call("PutObject", self._hash_and_put, key=tmp_key,
                                 data=b"".join(pending), hasher=hasher)
            else:
                if pending:
                    parts.append(await self._upload_part(tmp_key, upload_id, len(parts) + 1,
                                                         b"".join(pending), hasher))
                tmp_may_exist = True
                await self._call(
                    "CompleteMultipartUpload", self._client.complete_multipart_upload,
                    Bucket=self.bucket, Key=tmp_key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                upload_id = None
            pending.clear()
            info = hasher.info()
            await self._copy(tmp_key, self.object_key(info.key), info.size)
        except BaseException:
            if upload_id is not None:
                await self._cleanup("AbortMultipartUpload", self._client.abort_multipart_upload,
                                    Key=tmp_key, UploadId=upload_id)
            raise
        finally:
            if tmp_may_exist:
                await self._cleanup("DeleteObject", self._client.delete_object, Key=tmp_key)
        return info

    async def put_bytes(self, data: bytes) -> BlobInfo:
        """Store bytes already in memory (multipart if large)."""
        return await self.put_stream(iter_chunks(data, PART_SIZE))

    def _hash_and_put(self, *, key: str, data: bytes, hasher: ContentHasher) -> None:
        hasher.update(data)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def _upload_part(
        self, tmp_key: str, upload_id: str, number: int, data: bytes, hasher: ContentHasher
    ) -> dict[str, Any]:
        def run() -> Any:
            hasher.update(data)
            return self._client.upload_part(Bucket=self.bucket, Key=tmp_key, UploadId=upload_id,
                                            PartNumber=number, Body=data)

        result = await self._call("UploadPart", run)
        return {"PartNumber": number, "ETag": result["ETag"]}

    async def _copy(self, source: str, target: str, size: int) -> None:
        """Copy the upload onto its key; overwriting refreshes LastModified (for the GC)."""
        copy_source = {"Bucket": self.bucket, "Key": source}
        if size <= COPY_OBJECT_LIMIT:
            await self._call("CopyObject", self._client.copy_object, Bucket=self.bucket,
                             Key=target, CopySource=copy_source)
        else:
            await self._call("Copy", self._client.copy, CopySource=copy_source,
                             Bucket=self.bucket, Key=target)

    # -- reading -----------------------------------------------------------

    async def _read(
        self, key: str, offset: int, length: int | None, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        await self.ensure_bucket()
        if length == 0:
            if await self.size(key) is None:
                raise BlobNotFound(f"no blob {key}")
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            response = await self._call("GetObject", self._client.get_object,
                                        expect=_NOT_FOUND | {"InvalidRange"}, **kwargs)
        except ClientError as exc:
            if _code(exc) == "InvalidRange":  # offset at or past the end: nothing to read
                return
            raise BlobNotFound(f"no blob {key}") from None
        body = response["Body"]
        try:
            pieces = body.iter_chunks(chunk_size)
            while True:
                try:
                    data = await anyio.to_thread.run_sync(next, pieces, None)
                except BotoCoreError as exc:
                    raise self._unavailable("GetObject (reading the body)", exc) from exc
                if data is None:
                    return
                yield data
        finally:
            body.close()  # drops the connection if the reader stopped early

    async def size(self, key: str) -> int | None:
        """The blob's size, or None if absent."""
        target = self.object_key(key)
        await self.ensure_bucket()
        try:
            head = await self._call("HeadObject", self._client.head_object, expect=_NOT_FOUND,
                                    Bucket=self.bucket, Key=target)
        except ClientError:
            return None
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        """Remove the blob; S3 deletes are idempotent."""
        target = self.object_key(key)
        await self.ensure_bucket()
        await self._call("DeleteObject", self._client.delete_object, Bucket=self.bucket,
                         Key=target)

    # -- garbage collection ------------------------------------------------

    async def written_before(self, cutoff: float) -> AsyncGenerator[str, None]:
        """Yield keys whose LastModified is before ``cutoff``; sweep stale uploads.

        LastModified has a one-second resolution. Temporary objects and
        incomplete multipart uploads older than the cutoff are removed.
        """
        await self.ensure_bucket()
        await self._abort_stale_uploads(cutoff)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self._base))
        while True:
            page = await self._call("ListObjectsV2", functools.partial(next, pages, None))
            if page is None:
                return
            for item in page.get("Contents", ()):
                name = str(item["Key"])
                if item["LastModified"].timestamp() >= cutoff:
                    continue
                if name.startswith(self._tmp):
                    await self._cleanup("DeleteObject", self._client.delete_object, Key=name)
                    continue
                fanout, _, key = name[len(self._base):].partition("/")
                if is_blob_key(key) and fanout == key[:2]:
                    yield key

    async def _abort_stale_uploads(self, cutoff: float) -> None:
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self._tmp))
        while True:
            page = await self._call("ListMultipartUploads", functools.partial(next, pages, None))
            if page is None:
                return
            for upload in page.get("Uploads", ()):
                if upload["Initiated"].timestamp() < cutoff:
                    await self._cleanup("AbortMultipartUpload",
                                        self._client.abort_multipart_upload,
                                        Key=upload["Key"], UploadId=upload["UploadId"])

    # -- lifecycle ---------------------------------------------------------

    async def ping(self) -> None:
        """Check the bucket answers (HeadBucket), creating it on first use if allowed."""
        await self.ensure_bucket()
        await self._call("HeadBucket", self._client.head_bucket, Bucket=self.bucket)

    async def close(self) -> None:
        """Close the client's connection pool."""
        await anyio.to_thread.run_sync(self._client.close)
