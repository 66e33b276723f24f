"""The client's own error: printed as ``engine: <message>`` with an exit status."""

from __future__ import annotations


class ClientError(Exception):
    """A client-side error (bad arguments, a failed stream)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
