"""What the release commands (release/cli.py, release/retrain_cli.py) share: the
record lifetime option, broker errors said with the command line's flags, and the
promotion's decision table."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console

out = Console(highlight=False)


def lifetime(text: str) -> timedelta:
    """--expires, at most the hubs' limit (MAX_VALIDITY)."""
    from edgecast_runtime.releases.record import MAX_VALIDITY

    from .errors import SigningError
    from .rollout import parse_duration

    try:
        span = parse_duration(text)
    except SigningError as exc:
        raise SigningError(f"--expires: {exc}") from None
    if span > MAX_VALIDITY:
        raise SigningError(f"--expires {text}: a release record is valid for at most {MAX_VALIDITY.days} days "
                           f"(hubs refuse a longer one); release again before it expires")
    return span


@contextmanager
def broker_flags() -> Iterator[None]:
    """A broker error that names a setting, said with the command line's flags."""
    from .errors import ReleaseDeliveryError, TlsNeededError

    try:
        yield
    except TlsNeededError as exc:
        raise ReleaseDeliveryError(f"{exc.problem}: the port speaks TLS, so TLS is likely needed: pass "
                                   f"--ca-file CA.crt (the broker's CA) or --tls (the system's CAs)") from None


def print_decisions(decisions: list) -> None:
    from rich.table import Table
    from rich.text import Text

    from edgecast.tables import console

    from .promote import COLUMNS, decision_rows

    if not decisions:
        out.print("no hub status on the broker: nothing to decide", markup=False)
        return
    table = Table(*COLUMNS)
    for row in decision_rows(decisions):  # plain text: a hub's word is never markup
        table.add_row(*(Text(cell) for cell in row))
    console().print(table, soft_wrap=True)
