"""`edgecast-runtime mqtt`: readings from one topic, answers to another (JSON), with
paho-mqtt 2.x (the `[mqtt]` extra), over MQTT 5.

A reading arrives with QoS 1 and is acknowledged to the broker (PUBACK) only after
its state is on disk and its answer is queued for publishing (QoS 1 too), so a
crash before that makes the broker deliver it again; a re-delivered reading with a
timestamp is recognised and answered as before, without being counted twice. A
reading whose state cannot be written is not acknowledged either: the readings after
it are held back unread, and the hub reconnects after a back-off so the broker
delivers them again, in order. The broker keeps this client's session (clean start
off, a session that never expires), so readings published while the runtime is down
wait for it; paho reconnects with a doubling back-off. What is let in at all (payload
caps, retained readings, topic loops) and the default client id: mqtt/policy.py."""

from __future__ import annotations

import json
import threading
import time
from datetime import tzinfo
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.errors import EdgecastRuntimeError, StateError
from edgecast_runtime.lifecycle import FilePath, on_signals, open_holder, warn_if_memory_only
from edgecast_runtime.logs import log_event
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.mqtt.alerts import EVENTS_SUFFIX, AlertPublisher, default_alert_topic
from edgecast_runtime.mqtt.policy import (
    DEFAULT_MAX_READING_BYTES,
    NEIGHBOUR,
    READING,
    RELEASE,
    PayloadGate,
    check_topics,
    default_client_id,
)
from edgecast_runtime.mqtt.security import configure_client, no_delay, parse_broker
from edgecast_runtime.neighbours import open_link
from edgecast_runtime.policy import StreamPolicy
from edgecast_runtime.readings import Header, LineParser
from edgecast_runtime.releases.delivery import OFFLINE, ONLINE, SHADOW_REPORT_SECONDS, check_hub_id
from edgecast_runtime.releases.shadow import open_shadow
from edgecast_runtime.releases.updates import HubUpdater
from edgecast_runtime.reload import DEFAULT_POLL_SECONDS
from edgecast_runtime.skill.metrics import HubMetrics
from edgecast_runtime.skill.rolling import SkillSettings
from edgecast_runtime.systemd_notify import Notifier

if TYPE_CHECKING:
    from edgecast_runtime.neighbours import NeighbourLink
    from edgecast_runtime.reload import ModelHolder
    from edgecast_runtime.streaming import StreamingForecaster

DEFAULT_KEEPALIVE = 30  # seconds
DEFAULT_RECONNECT_MAX = 30  # longest wait between reconnection attempts, seconds
DEFAULT_STATUS_INTERVAL = 60.0  # seconds between status (metrics summary) messages
TICK_SECONDS = 0.5  # the main loop's wake-up: a status message when due, the watchdog's ping
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 Session Expiry Interval: the broker keeps it


def _import_paho() -> SimpleNamespace:
    try:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions
    except ImportError:
        raise EdgecastRuntimeError("the mqtt command needs paho-mqtt 2.x: "
                                   "pip install 'edgecast-runtime[mqtt]'") from None
    return SimpleNamespace(Client=paho.Client, MQTTv5=paho.MQTTv5, api=CallbackAPIVersion,
                           Properties=Properties, PacketTypes=PacketTypes,
                           SubscribeOptions=SubscribeOptions, topic_matches_sub=paho.topic_matches_sub)


class MqttBridge:
    def __init__(self, holder: ModelHolder, streamer: StreamingForecaster, host: str, port: int,
                 subscribe: str, publish: str, client_id: str,
                 keepalive: int = DEFAULT_KEEPALIVE, reconnect_max: int = DEFAULT_RECONNECT_MAX,
                 security: Optional[dict] = None, updater: Optional[HubUpdater] = None,
                 status_topic: Optional[str] = None, status_interval: float = DEFAULT_STATUS_INTERVAL,
                 link: Optional[NeighbourLink] = None, gate: Optional[PayloadGate] = None,
                 alert_topic: Optional[str] = None) -> None:
        self.paho = _import_paho()
        self.holder, self.streamer = holder, streamer
        self.link = link  # neighbours.NeighbourLink: neighbours' readings in, own readings out
        self.host, self.port, self.keepalive = host, port, keepalive
        self.subscribe_topic, self.publish_topic = subscribe, publish
        self.gate = gate or PayloadGate(releases=updater is not None)
        self.client = self.paho.Client(self.paho.api.VERSION2, client_id=client_id,
                                       protocol=self.paho.MQTTv5, manual_ack=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        configure_client(self.client, **(security or {}))
        self.alerts = (AlertPublisher(self.client, alert_topic, streamer.scorer)
                       if alert_topic and streamer.scorer is not None and streamer.scorer.calibration else None)
        self.updater = updater
        if updater is not None:  # retained status; the broker says offline if we drop off
            updater.start(holder, self._publish_status)
            self.client.will_set(updater.online_topic, OFFLINE, qos=1, retain=True)
        self.stopped = threading.Event()
        # The /v1/metrics summary, retained on `status_topic` every `status_interval` s.
        self.status_topic, self.status_interval = status_topic, status_interval
        self.metrics = HubMetrics(lambda: holder.current, streamer)
        # After a reading that could not be saved: readings are held back unacknowledged
        # until a reconnect, `retry_delay` seconds later (doubling to reconnect_max).
        self.reconnect_max = reconnect_max
        self.held_since: Optional[float] = None
        self.retry_delay = 1.0

    def run(self, tick: Callable[[], None] = lambda: None) -> None:
        """Connect (retrying until the broker answers) and handle readings until
        `stop()`; paho's network thread reconnects on its own. `tick()` runs on
        every pass of the main loop (the watchdog's ping)."""
        self._connect()
        if self.link is not None:
            self.link.start_releasing(lambda answer: self._publish(answer, None), self.stopped)
        next_status = time.monotonic() + self.status_interval
        try:
            while not self.stopped.wait(min(TICK_SECONDS, self.status_interval)):
                tick()
                now = time.monotonic()
                if self.status_topic and now >= next_status:
                    self.publish_status()
                    next_status = now + self.status_interval
                if self.held_since is not None and now >= self.held_since + self.retry_delay:
                    self._redeliver()
        finally:
            if self.updater is not None:
                self.updater.stop()
                try:  # a clean disconnect sends no last will: say it ourselves
                    self.client.publish(self.updater.online_topic, OFFLINE, qos=1,
                                        retain=True).wait_for_publish(5)
                except (RuntimeError, ValueError):
                    pass  # not connected: the broker keeps the last status
            self.client.disconnect()
            self.client.loop_stop()

    def _connect(self) -> None:
        properties = self.paho.Properties(self.paho.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        properties.MaximumPacketSize = self.gate.packet_limit  # larger ones never reach us
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False,
                                  properties=properties)
        self.client.loop_start()

    def _redeliver(self) -> None:
        """Reconnect, so the broker sends the readings left unacknowledged again, in order."""
        log_event({"event": "mqtt_redelivery", "held_seconds": round(time.monotonic() - self.held_since, 3)})
        self.client.disconnect()
        self.client.loop_stop()  # the network thread is gone: nothing is handled meanwhile
        self.held_since = None
        self.retry_delay = min(self.retry_delay * 2, float(self.reconnect_max))
        self._connect()

    def stop(self) -> None:
        self.stopped.set()

    def publish_status(self) -> None:
        try:
            body = json.dumps({**self.metrics.summary(), "mqtt": self.gate.counts()},
                              separators=(",", ":"), default=str)
        except Exception as exc:  # a status that cannot be read must not stop the bridge
            log_event({"event": "internal_error", "error": f"status: {type(exc).__name__}: {exc}"})
            return
        self.client.publish(self.status_topic, body, qos=1, retain=True)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log_event({"event": "mqtt_refused", "reason": str(reason_code)})
            return
        no_delay(client)
        # Subscribing again is harmless when the broker kept the session, and
        # needed when it did not (a broker restarted without persistence).
        topics = [self.subscribe_topic, *(self.updater.topics if self.updater else [])]
        client.subscribe([(topic, self.paho.SubscribeOptions(qos=1)) for topic in topics])
        if self.updater is not None:
            client.publish(self.updater.online_topic, ONLINE, qos=1, retain=True)
            self.updater.publish_status()
        if self.alerts is not None:
            self.alerts.publish_state()
        for topic in self.link.subscriptions() if self.link is not None else ():
            client.subscribe(topic, options=self.paho.SubscribeOptions(qos=1))
        log_event({"event": "mqtt_connected", "broker": f"{self.host}:{self.port}",
                   "session_present": bool(flags.session_present),
                   "subscribe": self.subscribe_topic, "publish": self.publish_topic})

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: list, properties: Any) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        log_event({"event": "mqtt_subscribe_refused" if refused else "mqtt_subscribed",
                   "topic": self.subscribe_topic, "reasons": [str(c) for c in reason_codes]})

    def _publish_status(self, payload: bytes) -> None:
        self.client.publish(self.updater.status_topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        log_event({"event": "mqtt_disconnected", "reason": str(reason_code)})

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        log_event({"event": "mqtt_connect_failed", "broker": f"{self.host}:{self.port}"})

    def _kind(self, topic: str) -> str:
        if self.updater is not None and self.updater.owns(topic):
            return RELEASE
        if self.link is not None and self.link.is_neighbour_topic(topic):
            return NEIGHBOUR
        return READING

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """Runs on paho's network thread; an exception here would stop the loop,
        so every failure becomes an error answer."""
        kind = self._kind(message.topic)
        refusal = self.gate.refusal(kind, message.topic, len(message.payload), bool(message.retain))
        if refusal is not None:  # never decoded; acknowledged, as sending it again changes nothing
            if kind != RELEASE and not message.retain:
                self._publish({"status": "error", "error": refusal}, message.topic)
            client.ack(message.mid, message.qos)
            return
        if kind == RELEASE:
            self.updater.receive(message.topic, message.payload)  # retained: sent again if lost
            client.ack(message.mid, message.qos)
            return
        if self.held_since is not None:
            return  # behind a reading not saved: unread and unacknowledged, delivered again in order
        try:
            answers = [self._answer(message.payload)] if self.link is None else self._linked(message)
        except StateError as exc:  # not on disk: no PUBACK, so the broker delivers it again
            self._hold(message.topic, exc)
            return
        except Exception as exc:
            log_event({"event": "internal_error", "error": f"{type(exc).__name__}: {exc}"})
            answers = [{"status": "error", "error": "internal error"}]
        self.retry_delay = 1.0
        for answer in answers:
            self._publish(answer, message.topic)
        client.ack(message.mid, message.qos)

    def _hold(self, topic: str, exc: StateError) -> None:
        self.held_since = time.monotonic()
        log_event({"event": "reading_not_saved", "topic": topic, "error": str(exc),
                   "retry_in_seconds": self.retry_delay})
        self._publish({"status": "error", "error": f"{exc}; not acknowledged: the broker delivers it again"},
                      topic)

    def _publish(self, answer: dict, topic: Optional[str]) -> None:
        if topic is not None:
            answer["topic"] = topic
        answer["model_sha256"] = self.streamer.forecaster.sha256
        self.client.publish(self.publish_topic, json.dumps(answer, separators=(",", ":")), qos=1)

    def _linked(self, message: Any) -> list:
        """With neighbours: a neighbour's reading, or an own reading that may wait for them."""
        try:
            text = message.payload.decode("utf-8")
            if self.link.is_neighbour_topic(message.topic):
                return self.link.neighbour_message(message.topic, text)
            layout = self.streamer.forecaster.layout
            parsed = LineParser(layout, self.streamer.clock).parse(text)
            if isinstance(parsed, Header):
                return [{"status": "error", "error": "a CSV header is not a reading"}]
            answers = self.link.aligner.own(parsed)
            payload = self.link.reading_payload(parsed, layout)
            if payload is not None:
                self.client.publish(self.link.readings_topic, payload, qos=1)
            return answers
        except UnicodeDecodeError:
            return [{"status": "error", "error": "payload is not UTF-8 text"}]
        except ValueError as exc:  # a neighbour's payload that is not JSON
            return [{"status": "error", "error": f"not a JSON reading ({exc})"}]
        except StateError:
            raise
        except EdgecastRuntimeError as exc:
            return [{"status": "error", "error": str(exc)}]

    def _answer(self, payload: bytes) -> dict:
        try:
            parser = LineParser(self.streamer.forecaster.layout, self.streamer.clock)
            parsed = parser.parse(payload.decode("utf-8"))
            if isinstance(parsed, Header):
                return {"status": "error", "error": "a CSV header is not a reading"}
            return self.streamer.observe_reading(parsed)
        except UnicodeDecodeError:
            return {"status": "error", "error": "payload is not UTF-8 text"}
        except StateError:
            raise
        except EdgecastRuntimeError as exc:
            return {"status": "error", "error": str(exc)}


def run_mqtt(model_path: FilePath, *, broker: str, subscribe: str, publish: str,
             client_id: Optional[str] = None, keepalive: int = DEFAULT_KEEPALIVE,
             reconnect_max: int = DEFAULT_RECONNECT_MAX, threads: int = DEFAULT_THREADS,
             state: Optional[FilePath] = None, policy: Optional[StreamPolicy] = None,
             clock: Optional[tzinfo] = None,
             poll_interval: float = DEFAULT_POLL_SECONDS, security: Optional[dict] = None,
             trust: Optional[FilePath] = None, hub_id: Optional[str] = None,
             release_dir: Optional[FilePath] = None, skill: Optional[SkillSettings] = None,
             status_topic: Optional[str] = None,
             status_interval: float = DEFAULT_STATUS_INTERVAL, neighbours: Optional[dict] = None,
             max_payload: int = DEFAULT_MAX_READING_BYTES,
             loading: ModelLoading = SERVICE_LOADING, alert_topic: Optional[str] = None,
             shadow_report_seconds: float = SHADOW_REPORT_SECONDS) -> int:
    """Readings from `subscribe`, answers to `publish`, until SIGTERM/SIGINT;
    SIGHUP reloads the model. `broker` is HOST, HOST:PORT or [IPv6]:PORT; `security`
    holds mqtt.security.configure_client's settings. With `trust` (the operator's
    public key), signed releases sent to `hub_id` are installed (releases/updates.py). `neighbours`:
    neighbours.open_link's settings (station, topic_template, wait_seconds, publish_readings).
    `max_payload`: the largest reading accepted, in bytes (mqtt.policy.PayloadGate).
    `shadow_report_seconds`: how often at most a shadow's new pairs republish the status.
    `alert_topic`: where a schema-4 model's alerts go (mqtt/alerts.py; default
    edgecast/hub/ID/alerts with `hub_id`)."""
    host, port = parse_broker(broker)
    paho = _import_paho()
    gate = PayloadGate(max_payload, releases=trust is not None)
    updater = None
    if trust is not None:
        if not hub_id:
            raise EdgecastRuntimeError("trust needs hub_id (or username): the hub's topics "
                                       "are edgecast/hub/ID/...", setting=("trust", "hub_id", "username"))
        updater = HubUpdater(check_hub_id(hub_id), trust, release_dir or Path(model_path).parent / "releases",
                             model_path)
        model_path = updater.model_path
        shadow = open_shadow(updater, threads, loading, shadow_report_seconds)
    holder, streamer, watcher = open_holder(model_path, threads=threads, state=state,
                                            policy=policy, clock=clock,
                                            poll_interval=poll_interval, skill=skill,
                                            loading=loading, shadow=shadow.slot if updater else None)
    if updater is not None:
        shadow.watch(streamer.scorer)
    notifier = Notifier()
    bridge = None
    try:
        link = open_link(streamer, state=state, **(neighbours or {}))
        if alert_topic is None and hub_id and holder.current.spec.probabilistic is not None:
            alert_topic = default_alert_topic(check_hub_id(hub_id))
        publications = _publications(publish, status_topic, updater, link)
        publications += [("alert_topic", alert_topic), ("alert_topic", alert_topic and alert_topic + EVENTS_SUFFIX)]
        check_topics(_subscriptions(subscribe, updater, link), publications, paho.topic_matches_sub)
        source = "option"
        if not client_id:
            name = hub_id or (neighbours or {}).get("station")
            client_id, source = default_client_id(subscribe, name, state)
        bridge = MqttBridge(holder, streamer, host, port, subscribe, publish,
                            client_id, keepalive=keepalive, reconnect_max=reconnect_max,
                            security=security, updater=updater, status_topic=status_topic,
                            status_interval=status_interval, link=link, gate=gate, alert_topic=alert_topic)
        on_signals({"SIGTERM": bridge.stop, "SIGINT": bridge.stop,
                    "SIGHUP": watcher.request_reload})
        log_event({"event": "mqtt_starting", "broker": f"{host}:{port}", "client_id": client_id,
                   "client_id_from": source, "max_packet_bytes": gate.packet_limit,
                   "model_name": holder.current.model_name, "sha256": holder.current.sha256,
                   "state": state, "release_version": updater.version if updater else None})
        warn_if_memory_only(state)
        # Ready once started, not once connected: paho keeps retrying an absent
        # broker, and systemd would otherwise kill a hub that boots before it.
        notifier.ready(f"connecting to {host}:{port}")
        bridge.run(lambda: notifier.watchdog(watcher.alive))
    finally:
        notifier.stopping()
        watcher.stop()
        streamer.close()
        if bridge is not None:  # a refusal at start is one line
            log_event({"event": "stopped"})
    return 0


def _subscriptions(subscribe: str, updater: Optional[HubUpdater], link: Optional[NeighbourLink]) -> list:
    """(setting, filter) of every subscription, for mqtt.policy.check_topics."""
    return [("subscribe", subscribe), *(("hub_id", topic) for topic in (updater.topics if updater else ())),
            *(("neighbour_topic", topic) for topic in (link.subscriptions() if link is not None else ()))]


def _publications(publish: str, status_topic: Optional[str], updater: Optional[HubUpdater],
                  link: Optional[NeighbourLink]) -> list:
    """(setting, topic) of every topic the hub publishes to."""
    topics = [("publish", publish), ("status_topic", status_topic)]
    if updater is not None:
        topics += [("hub_id", updater.status_topic), ("hub_id", updater.online_topic)]
    if link is not None and link.publish_readings:
        topics.append(("publish_readings", link.readings_topic))
    return topics
