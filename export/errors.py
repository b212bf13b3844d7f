"""Typed errors of the export step."""
from edgecast.common import EdgecastError


class ExportError(EdgecastError):
    """A conversion could not be made (bad opset, converter failure, unreadable artifact)."""


class ParityError(EdgecastError):
    """An export does not give Keras's numbers within tolerance; carries the report."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report
