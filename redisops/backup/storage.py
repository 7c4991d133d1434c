"""Where backups live: a local directory (`file:///dir`) or Google Cloud Storage
(`gs://bucket/prefix`). Objects are written and read as streams, never whole in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from redisops.errors import ConfigError, OperationError

CHUNK = 1 << 20
# google-cloud-storage 3.x fetches a bucket's metadata (storage.buckets.get) in a background
# thread on ordinary object requests, for telemetry; the backup, drill and smoke identities
# hold object rights only. This is the library's switch that turns the fetch off.
NO_BUCKET_METADATA = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"


class ObjectMissing(OperationError):
    """The object does not exist."""


class Sink(Protocol):
    """A stream an object is written through; the object exists once it is closed."""

    def write(self, data: bytes, /) -> int: ...

    def __enter__(self) -> Sink: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> object: ...


class Storage(ABC):
    """A flat namespace of objects under one location."""

    url: str

    @abstractmethod
    def writer(self, name: str) -> Sink:
        """A binary stream to write object `name`; the object exists once it is closed."""

    @abstractmethod
    def reader(self, name: str) -> IO[bytes]:
        """A binary stream reading object `name` (OperationError when it is missing)."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def children(self, prefix: str = "") -> list[str]:
        """The names of the 'directories' directly under the location (backup ids) that
        start with `prefix`."""

    @abstractmethod
    def objects(self, directory: str) -> dict[str, int]:
        """Objects in `directory` with their sizes."""

    @abstractmethod
    def tree(self, start: str = "", end: str | None = None) -> dict[str, dict[str, int]]:
        """The objects under the location whose names (relative to it) sort at or after
        `start` and before `end` (None: no end), by first-level directory, with their
        sizes: one listing of that range, not one per directory."""

    @abstractmethod
    def names(self, directory: str, page_size: int) -> Iterator[str]:
        """Object names in `directory` in name order, fetched `page_size` at a time as the
        caller consumes them."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete an object, or a directory and everything in it."""

    @abstractmethod
    def check(self) -> None:
        """Fail early with a clear message when the location cannot be used."""

    def read_text(self, name: str) -> str:
        """The whole (small) object `name`; ObjectMissing when there is none."""
        with self.reader(name) as stream:
            return stream.read().decode()

    def write_text(self, name: str, text: str) -> None:
        with self.writer(name) as stream:
            stream.write(text.encode())


def in_range(name: str, start: str, end: str | None) -> bool:
    """Whether `name` is in [start, end) as GCS's startOffset/endOffset compare names."""
    return start <= name and (end is None or name < end)


class FileStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ConfigError(f"object name {name!r} leaves the backup location")
        return path

    def writer(self, name: str) -> Sink:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _AtomicFile(path)

    def reader(self, name: str) -> IO[bytes]:
        try:
            return self._path(name).open("rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{self.url}/{name} does not exist") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def children(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith(prefix)
        )

    def objects(self, directory: str) -> dict[str, int]:
        path = self._path(directory)
        if not path.is_dir():
            return {}
        return {
            p.name: p.stat().st_size
            for p in path.iterdir()
            if p.is_file() and not p.name.endswith(".part")
        }

    def tree(self, start: str = "", end: str | None = None) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for directory in self.children():
            objects = {
                name: size
                for name, size in self.objects(directory).items()
                if in_range(f"{directory}/{name}", start, end)
            }
            if objects or in_range(f"{directory}/", start, end):
                found[directory] = objects
        return found

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.url}: {self.root} is not a directory")

    def names(self, directory: str, page_size: int) -> Iterator[str]:
        yield from sorted(self.objects(directory))

    def remove(self, path: str) -> None:
        target = self._path(path)
        if target.is_file():
            target.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)


class _AtomicFile:
    """Write to a temporary name, rename on a clean close: no half-written objects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.part")
        self.handle = self.tmp.open("wb")
        os.chmod(self.tmp, 0o600)

    def write(self, data: bytes) -> int:
        return self.handle.write(data)

    def close(self, failed: bool = False) -> None:
        if self.handle.closed:
            return
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if failed:
            self.tmp.unlink(missing_ok=True)
        else:
            os.replace(self.tmp, self.path)

    def __enter__(self) -> _AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.close(failed=exc_type is not None)


class GcsStorage(Storage):
    """gs://bucket/prefix with google-cloud-storage (Application Default Credentials /
    Workload Identity; STORAGE_EMULATOR_HOST for the emulator).

    Only object requests are made (objects.list, objects.get, objects.insert), never one
    on the bucket itself: the jobs' identities hold objectCreator / objectViewer on the
    bucket, which grant no storage.buckets.get. Objects are never replaced
    (ifGenerationMatch=0): replacing needs storage.objects.delete, which neither holds.
    """

    def __init__(
        self, bucket: str, prefix: str, client: Any = None, deadline: float = 30.0
    ) -> None:
        self.deadline = deadline  # how long to keep retrying an unreachable service
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self._client = client
        self._bucket: Any = None

    @property
    def retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.deadline)

    def _full(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def _root(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage

            # Read by the library on every request; an explicit setting is respected.
            os.environ.setdefault(NO_BUCKET_METADATA, "true")
            client = self._client
            if client is None:
                try:
                    if os.environ.get("STORAGE_EMULATOR_HOST"):
                        from google.auth.credentials import AnonymousCredentials

                        client = storage.Client(
                            credentials=AnonymousCredentials(), project="emulator"
                        )
                    else:
                        client = storage.Client()
                except DefaultCredentialsError as exc:
                    raise ConfigError(
                        f"{self.url}: no Google credentials ({exc}); on GKE bind the "
                        "Kubernetes service account with Workload Identity, elsewhere run "
                        "`gcloud auth application-default login`"
                    ) from exc
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        try:
            return fn(*args, **kwargs)
        except gexc.NotFound as exc:
            raise ObjectMissing(f"{self.url}: {what}: not found ({exc.message})") from exc
        except gexc.PreconditionFailed as exc:
            raise OperationError(
                f"{self.url}: {what}: the object exists already; backups never replace "
                "an object (a second writer with the same backup id?)"
            ) from exc
        except gexc.Forbidden as exc:
            raise ConfigError(
                f"{self.url}: {what}: permission denied; grant the job's identity "
                "objectCreator/objectViewer on the bucket"
            ) from exc
        except (gexc.GoogleAPICallError, gexc.RetryError, GoogleAuthError, OSError) as exc:
            raise OperationError(f"{self.url}: {what} failed: {exc}") from exc

    def _list(self, what: str, fn: Any, *args: Any) -> Any:
        """A listing: objects.list answers 404 only when the bucket does not exist."""
        try:
            return self._call(what, fn, *args)
        except ObjectMissing as exc:
            raise OperationError(
                f"{self.url}: bucket {self.bucket_name} does not exist; create it (the "
                "Pulumi program does) or fix the location"
            ) from exc

    def _blobs(self, **kwargs: Any) -> Any:
        return self.bucket.client.list_blobs(
            self.bucket_name, timeout=10, retry=self.retry, **kwargs
        )

    def check(self) -> None:
        """Fail early when the bucket is unreachable or missing: one objects.list of at
        most one name (a bucket lookup would need storage.buckets.get)."""
        self._list("open the location", list, self._blobs(prefix=self._root, max_results=1))

    def writer(self, name: str) -> Sink:
        blob = self.bucket.blob(self._full(name))
        stream = self._call(
            f"write {name}",
            blob.open,
            "wb",
            chunk_size=8 * CHUNK,
            ignore_flush=True,
            if_generation_match=0,
            retry=self.retry,
        )
        return _GcsSink(self, name, stream)

    def reader(self, name: str) -> IO[bytes]:
        blob = self.bucket.blob(self._full(name))
        if not self._call(f"find {name}", blob.exists, timeout=10, retry=self.retry):
            raise ObjectMissing(f"{self.url}/{name} does not exist")
        stream: IO[bytes] = self._call(
            f"read {name}", blob.open, "rb", chunk_size=8 * CHUNK, retry=self.retry
        )
        return stream

    def read_text(self, name: str) -> str:
        """One request (a missing object answers 404), not a lookup and then a read."""
        blob = self.bucket.blob(self._full(name))
        try:
            data = self._call(f"read {name}", blob.download_as_bytes, timeout=30, retry=self.retry)
        except ObjectMissing as exc:
            raise ObjectMissing(f"{self.url}/{name} does not exist") from exc
        return bytes(data).decode()

    def exists(self, name: str) -> bool:
        blob = self.bucket.blob(self._full(name))
        return bool(self._call(f"find {name}", blob.exists, timeout=10, retry=self.retry))

    def children(self, prefix: str = "") -> list[str]:
        root = self._root

        def prefixes() -> set[str]:
            iterator = self._blobs(prefix=root + prefix, delimiter="/")
            for _ in iterator:  # the 'directories' are known once every page was read
                pass
            return set(iterator.prefixes)

        found: set[str] = self._list("list backups", prefixes)
        return sorted(p[len(root) :].rstrip("/") for p in found)

    def objects(self, directory: str) -> dict[str, int]:
        prefix = self._full(directory) + "/"
        blobs = self._list("list objects", list, self._blobs(prefix=prefix))
        return {b.name[len(prefix) :]: int(b.size or 0) for b in blobs}

    def tree(self, start: str = "", end: str | None = None) -> dict[str, dict[str, int]]:
        root = self._root
        offsets = {"start_offset": root + start} if start else {}
        if end is not None:
            offsets["end_offset"] = root + end
        found: dict[str, dict[str, int]] = {}
        for blob in self._list("list backups", list, self._blobs(prefix=root, **offsets)):
            relative = blob.name[len(root) :]
            if not in_range(relative, start, end):  # an emulator may ignore the offsets
                continue
            directory, _, name = relative.partition("/")
            if name:
                found.setdefault(directory, {})[name] = int(blob.size or 0)
        return found

    def names(self, directory: str, page_size: int) -> Iterator[str]:
        prefix = self._full(directory) + "/"
        pages = iter(self._blobs(prefix=prefix, page_size=page_size).pages)

        def next_page() -> list[str] | None:
            page = next(pages, None)
            return None if page is None else [b.name[len(prefix) :] for b in page]

        while (page := self._list(f"list {directory}", next_page)) is not None:
            yield from page

    def remove(self, path: str) -> None:
        raise ConfigError(
            f"{self.url}: pruning GCS is the bucket's lifecycle rules' job (set by the "
            "Pulumi program), not redisops'"
        )


class _GcsSink:
    """A BlobWriter whose errors name the location and the object."""

    def __init__(self, storage: GcsStorage, name: str, stream: Any) -> None:
        self.storage = storage
        self.name = name
        self.stream = stream

    def write(self, data: bytes) -> int:
        written: int = self.storage._call(f"write {self.name}", self.stream.write, data)
        return written

    def __enter__(self) -> _GcsSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        if exc_type is None:
            self.storage._call(f"write {self.name}", self.stream.close)
        else:
            with contextlib.suppress(Exception):  # the original error is what matters
                self.stream.terminate()


def open_storage(location: str) -> Storage:
    """`file:///abs/dir` or `gs://bucket/prefix` -> a Storage."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(
                f"backup location {location!r}: use file:///absolute/dir (three slashes)"
            )
        return FileStorage(Path(parts.path))
    if parts.scheme == "gs":
        if not parts.netloc:
            raise ConfigError(f"backup location {location!r}: use gs://bucket/prefix")
        return GcsStorage(parts.netloc, parts.path)
    raise ConfigError(f"backup location {location!r}: expected gs://bucket/prefix or file:///dir")
