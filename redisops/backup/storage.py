"""Where backups live: a local directory (`file:///dir`) or Google Cloud Storage
(`gs://bucket/prefix`). Objects are written and read as streams, never whole in memory.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from redisops.errors import ConfigError, OperationError

CHUNK = 1 << 20


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
    def children(self) -> list[str]:
        """The names of the 'directories' directly under the location (backup ids)."""

    @abstractmethod
    def objects(self, directory: str) -> dict[str, int]:
        """Objects in `directory` with their sizes."""

    @abstractmethod
    def remove(self, directory: str) -> None:
        """Delete a directory and everything in it."""

    def read_text(self, name: str) -> str:
        with self.reader(name) as stream:
            return stream.read().decode()

    def write_text(self, name: str, text: str) -> None:
        with self.writer(name) as stream:
            stream.write(text.encode())


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
            raise OperationError(f"{self.url}/{name} does not exist") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def children(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def objects(self, directory: str) -> dict[str, int]:
        path = self._path(directory)
        if not path.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in path.iterdir() if p.is_file()}

    def remove(self, directory: str) -> None:
        shutil.rmtree(self._path(directory), ignore_errors=True)


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
    Workload Identity; STORAGE_EMULATOR_HOST for the emulator)."""

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
    def bucket(self) -> Any:
        if self._bucket is None:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage

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
            raise OperationError(f"{self.url}: {what}: not found ({exc.message})") from exc
        except gexc.Forbidden as exc:
            raise ConfigError(
                f"{self.url}: {what}: permission denied; grant the backup identity "
                "objectCreator/objectViewer on the bucket"
            ) from exc
        except (gexc.GoogleAPICallError, gexc.RetryError, GoogleAuthError, OSError) as exc:
            raise OperationError(f"{self.url}: {what} failed: {exc}") from exc

    def check(self) -> None:
        """Fail early with a clear message when the bucket is unreachable or missing."""
        if not self._call("open the bucket", self.bucket.exists, timeout=10, retry=self.retry):
            raise OperationError(
                f"{self.url}: bucket {self.bucket_name} does not exist; create it (the "
                "Pulumi program does) or fix the location"
            )

    def writer(self, name: str) -> Sink:
        blob = self.bucket.blob(self._full(name))
        stream: Sink = self._call(
            f"write {name}",
            blob.open,
            "wb",
            chunk_size=8 * CHUNK,
            ignore_flush=True,
            retry=self.retry,
        )
        return stream

    def reader(self, name: str) -> IO[bytes]:
        blob = self.bucket.blob(self._full(name))
        if not self._call(f"find {name}", blob.exists, timeout=10, retry=self.retry):
            raise OperationError(f"{self.url}/{name} does not exist")
        stream: IO[bytes] = self._call(
            f"read {name}", blob.open, "rb", chunk_size=8 * CHUNK, retry=self.retry
        )
        return stream

    def exists(self, name: str) -> bool:
        blob = self.bucket.blob(self._full(name))
        return bool(self._call(f"find {name}", blob.exists, timeout=10, retry=self.retry))

    def children(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""

        def prefixes() -> set[str]:
            iterator = self.bucket.client.list_blobs(
                self.bucket_name, prefix=prefix, delimiter="/", timeout=10, retry=self.retry
            )
            for _ in iterator:  # the 'directories' are known once every page was read
                pass
            return set(iterator.prefixes)

        found: set[str] = self._call("list backups", prefixes)
        return sorted(p[len(prefix) :].rstrip("/") for p in found)

    def objects(self, directory: str) -> dict[str, int]:
        prefix = self._full(directory) + "/"
        blobs = self._call(
            "list objects",
            self.bucket.client.list_blobs,
            self.bucket_name,
            prefix=prefix,
            timeout=10,
            retry=self.retry,
        )
        return {b.name[len(prefix) :]: int(b.size or 0) for b in self._call("list", list, blobs)}

    def remove(self, directory: str) -> None:
        raise ConfigError(
            f"{self.url}: pruning GCS is the bucket's lifecycle rules' job (set by the "
            "Pulumi program), not redisops'"
        )


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
