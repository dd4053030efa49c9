"""Where results are stored (docs/ARCHITECTURE.md, "Storage"): the `Storage` protocol and its two backends.

    base.py   `Storage`, `StoredObject`, `check_key`: what every backend promises
    file.py   `FileStorage`: files under a directory, written then renamed
    s3.py     `S3Storage`: objects in one bucket via boto3, large ones in parts

`storage_from_settings` picks the backend from ``settings.storage_url``:
``s3://bucket[/prefix]`` or ``file:///abs/dir`` / ``file://./relative/dir``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobsvc.config import Settings
from jobsvc.errors import ConfigError
from jobsvc.storage.base import Storage, StoredObject, check_key
from jobsvc.storage.file import FileStorage
from jobsvc.storage.s3 import PART_SIZE, S3Storage

__all__ = [
    "PART_SIZE",
    "FileStorage",
    "S3Storage",
    "Storage",
    "StoredObject",
    "check_key",
    "storage_from_settings",
]


def storage_from_settings(settings: Settings) -> Storage:
    """The backend named by ``settings.storage_url``. Creates no connection and no directory."""
    parts = urlsplit(settings.storage_url)
    if parts.scheme == "s3" and parts.netloc:
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=settings.s3_endpoint_url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost"):  # file://./relative/dir
            path = parts.netloc + path
        if path:
            return FileStorage(Path(path))
    raise ConfigError(
        f"JOBSVC_STORAGE_URL={settings.storage_url!r} is not s3://bucket[/prefix] or file:///dir"
    )
