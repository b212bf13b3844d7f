"""Release and rollout defaults, importable without numpy or cryptography (the CLI builds
its option defaults from here, so each is written once)."""
from __future__ import annotations

from datetime import timedelta

DEFAULT_LIFETIME_TEXT = "30d"  # how long a release record stays valid, as the CLI writes it
DEFAULT_LIFETIME = timedelta(days=30)
DEFAULT_HEALTHY_SECONDS = 300.0  # how long canaries run a release before the rest get it
DEFAULT_FAILURE_THRESHOLD = 1  # canary failures that stop a rollout
DEFAULT_HUB_TIMEOUT = 300.0  # seconds to wait for a hub's answer
DEFAULT_WAIT_SECONDS = 2.0  # seconds `fleet status` collects the hubs' retained statuses
