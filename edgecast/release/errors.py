"""Typed errors of signing and releasing."""
from edgecast.common import EdgecastError


class SigningError(EdgecastError):
    """A key cannot be made or read, or a bundle cannot be signed or released as it is."""
