"""Typed errors of the toolkit. Each carries the facts a user needs to fix the input."""


class EdgecastError(Exception):
    """Base of every error the toolkit reports to the user as one line."""


class DataError(EdgecastError):
    """The CSV cannot be used: missing file or column, bad values, too few rows."""


class BundleError(EdgecastError):
    """A model folder is not a readable edgecast bundle."""
