"""One model per station, trained, exported and verified as Ray tasks, with a fleet report.

    from edgecast import fleet
    result = fleet.train(["../shared/data"], "PM2.5", export=True)   # models/fleet/STATION/
    fleet.report("models/fleet", leads=[1, 6, 24])                     # fleet.md, fleet.json, fleet-skill.png
"""
from __future__ import annotations

from .report import FleetReport, report
from .run import FAILED, SKIPPED, TRAINED, FleetError, FleetResult, StationResult, train
from .stations import FleetSettings, Station

__all__ = ["train", "report", "FleetResult", "StationResult", "FleetReport", "FleetError", "FleetSettings",
           "Station", "TRAINED", "SKIPPED", "FAILED"]
