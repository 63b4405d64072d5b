"""Errors raised by Homing.

HomingError
 ├── ConfigError            bad settings
 ├── StorageError           the database failed or refused
 │    ├── NotFoundError      no such object (in this organisation)
 │    ├── ConflictError      a unique key is taken (uid, eventId, event type name)
 │    │    └── StaleWriteError  the row changed since it was read (optimistic write lost)
 │    └── MigrationError     migrations could not be applied
 ├── InvalidTransition      the delivery state machine was asked for a move it forbids
 ├── BlockedAddressError    (ssrf.py; also an OSError) a delivery target is not allowed
 ├── InvalidSecretError     (signing.py) an endpoint secret cannot be used
 └── SignatureError         (signing.py) a signature does not verify
"""

from __future__ import annotations


class HomingError(Exception):
    """Something went wrong in Homing."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(HomingError):
    """The settings are invalid."""


class StorageError(HomingError):
    """The database failed."""


class NotFoundError(StorageError):
    """The object was not found."""


class ConflictError(StorageError):
    """An object with this key already exists."""


class StaleWriteError(ConflictError):
    """The object changed since it was read; read it again and retry."""


class MigrationError(StorageError):
    """The database schema could not be migrated."""


class InvalidTransition(HomingError):
    """This delivery state change is not allowed."""
