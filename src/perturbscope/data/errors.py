"""The one exception type every data loader raises for bad files."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file is corrupt, truncated, inconsistent or fails its checksum.

    Subclass of :class:`ValueError`, so ``except ValueError`` still catches it.
    The message always names the file and what was wrong with it.
    """
