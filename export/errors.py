"""Typed errors of the export step."""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgecast.base import EdgecastError

if TYPE_CHECKING:
    from .reports import ParityReport


class ExportError(EdgecastError):
    """A conversion could not be made (bad opset, converter failure, unreadable artifact)."""


class ParityError(EdgecastError):
    """An export does not give Keras's numbers within tolerance; carries the report."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


class MicroError(ExportError):
    """The microcontroller build cannot be made or does not verify; says why, with the numbers."""
