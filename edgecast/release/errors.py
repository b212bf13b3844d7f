"""Typed errors of signing and releasing."""
from edgecast.trainer.errors import EdgecastError


class SigningError(EdgecastError):
    """A key cannot be made or read, or a bundle cannot be signed or released as it is."""
