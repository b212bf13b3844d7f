"""Alerts on MQTT: a schema-4 model's alert states retained on the hub's alert topic
(by default `edgecast/hub/ID/alerts`, under the hub's own prefix that the broker's ACL
lets it write), and each raise or clear as an event on TOPIC/events (QoS 1, not
retained). The states are republished on every connect, so a subscriber that joins
late, or a hub that restarts, shows the current state; the hysteresis is
skill/calibration.py's, so an episode gives one raise and one clear."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from edgecast_runtime.logs import log_event

if TYPE_CHECKING:
    from edgecast_runtime.skill.rolling import StreamScorer
    from edgecast_runtime.skill.store import Outcome

EVENTS_SUFFIX = "/events"


def default_alert_topic(hub_id: str) -> str:
    return f"edgecast/hub/{hub_id}/alerts"


class AlertPublisher:
    """Publishes `scorer`'s alert states and events with paho `client` under `topic`."""

    def __init__(self, client: Any, topic: str, scorer: StreamScorer) -> None:
        self.client, self.topic, self.scorer = client, topic, scorer
        self.events_topic = topic + EVENTS_SUFFIX
        scorer.listeners.append(self.on_outcome)

    def publish_state(self) -> None:
        state = self.scorer.calibration.alerts()
        state.pop("events")
        self.client.publish(self.topic, json.dumps(state, separators=(",", ":")), qos=1, retain=True)

    def on_outcome(self, outcome: Outcome) -> None:
        events = outcome.extras.get("calibration", {}).get("alerts", ())
        for event in events:
            self.client.publish(self.events_topic, json.dumps(event, separators=(",", ":")), qos=1)
            log_event({"event": "alert_published", "alert": event["alert"], "change": event["event"],
                       "topic": self.events_topic})
        if events:
            self.publish_state()
