"""The project's error tree and the input rules every boundary shares.

A leaf: it imports nothing from rmswatch, so any room may use it. Every error rmswatch raises on
purpose derives from `RmswatchError`; the CLI prints one as one line and exits with code 2::

    RmswatchError                      root: catch this to catch everything raised on purpose
    ├── ConfigError      (ValueError)  a config or spec file: names the file, key, value, accepted
    ├── WireError        (ValueError)  an ingest batch: names the first bad field
    ├── DeliveryError                  a receiver did not accept a notification (no secrets)
    ├── StoreError                     the store can't be opened or used: names the URL's problem
    └── CheckpointError                a checkpoint can't be saved or loaded: names file and reason

The `ValueError` bases keep `except ValueError` catchers working where those errors were
`ValueError`s before the tree existed.
"""

from __future__ import annotations

from collections.abc import Sequence


class RmswatchError(Exception):
    """Root of every error rmswatch raises on purpose; its message is meant for a person."""


class ConfigError(RmswatchError, ValueError):
    """A config file that can't be used; the message names file, key, value and what's accepted."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: invalid config\n" + "\n".join(f"  - {p}" for p in problems))


class WireError(RmswatchError, ValueError):
    """A batch that can't be ingested; `field` is the path of the first bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DeliveryError(RmswatchError):
    """A notification was not accepted; the message never contains a secret or the body."""


class StoreError(RmswatchError):
    """The store can't be opened or used (a malformed URL, a schema with no migrations)."""


class CheckpointError(RmswatchError):
    """A checkpoint that can't be saved or loaded; `path` is the file, `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
