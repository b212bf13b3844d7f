"""Typed errors of signing and releasing."""
from edgecast.base import EdgecastError


class SigningError(EdgecastError):
    """A key cannot be made or read, or a bundle cannot be signed or released as it is."""


class ReleaseDeliveryError(EdgecastError):
    """A release cannot be delivered: the broker refuses the connection or a message, or
    the rollout stopped because canary hubs failed."""
