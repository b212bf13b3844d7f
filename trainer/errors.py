"""Typed errors of the trainer. Each carries the facts a user needs to fix the input."""
from edgecast.base import EdgecastError


class DataError(EdgecastError):
    """The CSV cannot be used: missing file or column, bad values, too few rows."""


class BundleError(EdgecastError):
    """A model folder is not a readable edgecast bundle."""
