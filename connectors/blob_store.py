"""Where models live: named blobs in a directory or in an S3-compatible bucket.

A trainer writes checkpoints and serving snapshots here, its standbys and the predictor fleet
read them. Two implementations of one small interface (``BlobStore``): a directory (local or a
shared mount) and any S3-compatible bucket through boto3 (AWS, MinIO, Ceph, moto). Both give the
two conditional writes that fencing needs: ``put_new`` (create only if absent) and ``swap``
(replace only if unchanged since read). S3 does both with conditional PUTs (``If-None-Match``,
``If-Match``); the directory with a hard link and a lock file.

Every failure to reach the store is a ``StoreUnavailable``, an ``OSError``: callers treat a
bucket that is away like a disk that is full.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path, PurePosixPath
from typing import Protocol

from connectors.extras import import_extra

SWAP_LOCK = ".swap.lock"


class StoreUnavailable(OSError):
    """The store could not be read or written (network, permissions, a bucket that is away)."""


class BlobStore(Protocol):
    url: str  # where the store is, for messages

    def location(self, key: str) -> PurePosixPath | Path:
        """Where ``key`` lives, for messages (``.name`` is the key)."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix``, sorted."""
        ...

    def get(self, key: str) -> bytes | None:
        """The blob, or ``None`` when there is none."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` atomically (a reader sees the old blob or the new one)."""
        ...

    def put_new(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it does."""
        ...

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        """Write ``key`` only if it still holds ``expected`` (``None``: absent); False otherwise."""
        ...

    def delete(self, key: str) -> None: ...

    def rename(self, key: str, new_key: str) -> None: ...


def open_blob_store(url: str | Path) -> BlobStore:
    """``s3://bucket/prefix`` (the endpoint and credentials from boto3's usual environment:
    ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) or a directory path."""
    text = str(url)
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        return S3BlobStore(bucket, prefix)
    return DirectoryBlobStore(Path(text))


class DirectoryBlobStore:
    """Blobs as files of one directory; writes go through a fsynced temporary file and a rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.url = str(self.directory)

    def location(self, key: str) -> Path:
        return self.directory / key

    def keys(self, prefix: str) -> list[str]:
        return sorted(p.name for p in self.directory.glob(f"{prefix}*") if p.is_file())

    def get(self, key: str) -> bytes | None:
        try:
            return (self.directory / key).read_bytes()
        except FileNotFoundError:
            return None

    def _write_tmp(self, key: str, data: bytes) -> Path:
        tmp = self.directory / f"{key}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # make the rename or link itself durable
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        tmp = self._write_tmp(key, data)
        os.replace(tmp, self.directory / key)
        self._sync_directory()

    def put_new(self, key: str, data: bytes) -> bool:
        tmp = self._write_tmp(key, data)
        try:
            os.link(tmp, self.directory / key)  # fails if the name exists: create-only, atomically
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_directory()
        return True

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        with open(self.directory / SWAP_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if self.get(key) != expected:
                return False
            self.put(key, data)
            return True

    def delete(self, key: str) -> None:
        (self.directory / key).unlink(missing_ok=True)

    def rename(self, key: str, new_key: str) -> None:
        os.replace(self.directory / key, self.directory / new_key)


class S3BlobStore:
    """Blobs as objects under ``prefix`` in ``bucket`` (boto3; conditional PUTs for fencing)."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        boto3 = import_extra("boto3", "s3", "an s3:// model store")  # only a user of an S3 store loads it

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3")
        self.url = f"s3://{bucket}/{self.prefix}"

    def location(self, key: str) -> PurePosixPath:
        return PurePosixPath(f"s3://{self.bucket}/{self.prefix}{key}")

    def _call(self, operation: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise _Refused(code) from None
            raise StoreUnavailable(f"s3://{self.bucket}: {operation} failed: {err}") from None
        except BotoCoreError as err:
            raise StoreUnavailable(f"s3://{self.bucket}: {operation} failed: {err}") from None

    def keys(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            page = self._call("list_objects_v2", Prefix=self.prefix + prefix,
                              **({"ContinuationToken": token} if token else {}))
            keys += [item["Key"].removeprefix(self.prefix) for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return sorted(keys)

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self._call("get_object", Key=self.prefix + key)
        except _Refused:
            return None
        try:
            return response["Body"].read(), response["ETag"]
        except Exception as err:  # the connection dropped mid-body
            raise StoreUnavailable(f"s3://{self.bucket}/{self.prefix}{key}: read failed: {err}") from None

    def get(self, key: str) -> bytes | None:
        found = self._get(key)
        return None if found is None else found[0]

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self.prefix + key, Body=data)

    def put_new(self, key: str, data: bytes) -> bool:
        try:
            self._call("put_object", Key=self.prefix + key, Body=data, IfNoneMatch="*")
            return True
        except _Refused:
            return False

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        found = self._get(key)
        if (found[0] if found else None) != expected:
            return False
        condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
        try:
            self._call("put_object", Key=self.prefix + key, Body=data, **condition)
            return True
        except _Refused:
            return False

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self.prefix + key)

    def rename(self, key: str, new_key: str) -> None:
        self._call("copy_object", Key=self.prefix + new_key, CopySource={"Bucket": self.bucket, "Key": self.prefix + key})
        self.delete(key)


class _Refused(Exception):
    """A conditional request refused, or a key that does not exist (not a failure of the store)."""
