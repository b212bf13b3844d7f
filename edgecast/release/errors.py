"""Typed errors of signing and releasing."""
from edgecast.base import EdgecastError


class SigningError(EdgecastError):
    """A key cannot be made or read, or a bundle cannot be signed or released as it is."""


class ReleaseDeliveryError(EdgecastError):
    """A release cannot be delivered: the broker refuses the connection or a message, or
    the rollout stopped because canary hubs failed."""


class TlsNeededError(ReleaseDeliveryError):
    """The broker's port speaks TLS and the connection was made without it. `problem`
    says what happened; the message adds the settings to give (ca_file, tls)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}: the port speaks TLS, so TLS is likely needed "
                         f"(give the broker's CA, ca_file, or use the system's CAs, tls)")
        self.problem = problem
