"""Fleet defaults, importable without pandas or Ray (the CLI's option defaults)."""
from __future__ import annotations

DEFAULT_LEADS = (1, 6, 24)  # forecast leads (steps) the fleet report tabulates
DEFAULT_FLEET_NAME = "fleet"  # bundles go to MODELS_DIR/NAME/STATION
# `fleet train` trains one model per station unless --global: the measurement on the ten
# shared stations decides (results/global.md).
DEFAULT_GLOBAL = False
