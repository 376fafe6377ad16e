"""Errors raised by the storage layer.

The service layer maps each one to a FHIR OperationOutcome and HTTP status
in a single place (``service.errors``), so storage stays free of HTTP.

    StorageError
    ├── ResourceNotFound      no such resource (or version)
    ├── ResourceGone          the resource (or version) was deleted
    ├── VersionConflict       the expected version is not the current one
    ├── DuplicateResource     a create raced another create of the same id
    ├── InvalidSearch         a search parameter or value cannot be understood
    ├── BlobNotFound          no blob under that content address
    ├── BlobTooLarge          an upload went past its size limit
    ├── BlobStoreUnavailable  the object store failed or could not be reached
    └── DatabaseBusy          no database connection came free in time
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class ResourceNotFound(StorageError):
    pass


class ResourceGone(StorageError):
    def __init__(self, message: str, version_id: int) -> None:
        super().__init__(message)
        self.version_id = version_id


class VersionConflict(StorageError):
    def __init__(self, message: str, current_version: int | None) -> None:
        super().__init__(message)
        self.current_version = current_version


class DuplicateResource(StorageError):
    pass


class InvalidSearch(StorageError):
    """A search that cannot be run; ``param`` names the offending parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class BlobNotFound(StorageError):
    """No blob under that content address (never written, or collected)."""


class BlobTooLarge(StorageError):
    """An upload went past its size limit; nothing of it was kept."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class BlobStoreUnavailable(StorageError):
    """The object store failed or could not be reached (not a missing blob)."""


class DatabaseBusy(StorageError):
    """Every connection of the process's pool stayed taken for the pool's whole timeout:
    the server is overloaded, and the request did nothing."""
