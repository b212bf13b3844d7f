"""The operator's MQTT connection: authentication and TLS (the runtime's
mqtt.security), publishing that waits for the broker's acknowledgement, and the hubs'
retained status messages (topics: edgecast_runtime.releases.delivery)."""
from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.mqtt.security import configure_client, parse_broker
from edgecast_runtime.releases.delivery import (
    CHAMPION,
    ONLINE_WILDCARD,
    SHADOW,
    STATUS_WILDCARD,
    TOPIC_ROOT,
    DeliveryError,
    hub_of,
)

from .errors import ReleaseDeliveryError, TlsNeededError

if TYPE_CHECKING:
    from paho.mqtt import client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

CONNECT_TIMEOUT = 15.0
PUBLISH_TIMEOUT = 30.0
SYNC_TIMEOUT = 5.0  # the longest to wait for the retained messages to have arrived
RELEASE_WILDCARD = f"{TOPIC_ROOT}/+/release"
SHADOW_RELEASE_WILDCARD = f"{TOPIC_ROOT}/+/shadow/release"
CLOSED = "closed"  # the broker closed the connection before its CONNACK


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to log in (mqtt.security.configure_client's options)."""

    broker: str
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False

    def security(self) -> dict:
        return {"username": self.username, "password_file": self.password_file,
                "password_env": self.password_env, "ca_file": self.ca_file,
                "cert_file": self.cert_file, "key_file": self.key_file, "tls": self.tls}


class OperatorSession:
    """A connected MQTT v5 client that follows every hub's retained status and whether
    it is online: `statuses` shows a hub that dropped off (its last will) with its
    last status and state "offline"; `records` holds each hub's retained release record
    (bytes). `sync()` waits until the retained messages have arrived."""

    def __init__(self, settings: BrokerSettings, client_id: str):
        import paho.mqtt.client as mqtt

        self.settings = settings
        self._statuses: dict[str, dict] = {}  # hub id -> its latest status
        self._online: dict[str, bool] = {}
        self._records: dict[tuple[str, str], bytes] = {}  # (hub, role) -> retained record
        self._connected = False
        self._sync_topic = f"edgecast/operator/sync/{client_id}"
        self._synced = threading.Event()
        self.changed = threading.Condition()
        self._connack: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._refused: dict[int, str] = {}  # message id -> the broker's PUBACK refusal
        self.client.on_publish = self._on_publish
        try:
            configure_client(self.client, **settings.security())
            host, port = parse_broker(settings.broker)
        except EdgecastRuntimeError as exc:
            raise ReleaseDeliveryError(str(exc)) from None
        self.host, self.port = host, port

    def __enter__(self) -> OperatorSession:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:  # ssl.SSLError included
            raise ReleaseDeliveryError(f"cannot connect to the broker {self.settings.broker}: {exc}") from None
        self.client.loop_start()
        try:
            code = self._connack.get(timeout=CONNECT_TIMEOUT)
        except queue.Empty:
            code = None
        if code is None or code == CLOSED or code.is_failure:
            self.__exit__()
            if code is not None and code != CLOSED:
                raise ReleaseDeliveryError(f"the broker {self.settings.broker} refused the connection: {code}")
            raise ReleaseDeliveryError(self._no_answer(closed=code == CLOSED))
        self.client.subscribe([(STATUS_WILDCARD, 1), (ONLINE_WILDCARD, 1), (RELEASE_WILDCARD, 1),
                               (SHADOW_RELEASE_WILDCARD, 1), (self._sync_topic, 1)])
        return self

    def _no_answer(self, closed: bool) -> str:
        """Why no MQTT answer came: a TLS port reached without TLS is said as such."""
        what = "closed the connection without an MQTT answer" if closed else \
            f"gave no MQTT answer within {CONNECT_TIMEOUT:g} s"
        tls_configured = bool(self.settings.ca_file or self.settings.cert_file or self.settings.tls)
        if not tls_configured and speaks_tls(self.host, self.port):
            raise TlsNeededError(f"the broker {self.settings.broker} {what}")
        return (f"the broker {self.settings.broker} {what}: is it an MQTT broker"
                f"{'' if tls_configured else ', and does it need TLS'}?")

    def sync(self, timeout: float = SYNC_TIMEOUT) -> bool:
        """Wait until the broker has sent the retained statuses and records: it sends
        them on subscribing, before a message published after the subscription. False
        when that message did not come back within `timeout` (then `timeout` was waited)."""
        self._synced.clear()
        self.client.publish(self._sync_topic, b"sync", qos=1, retain=False)
        return self._synced.wait(timeout)

    @property
    def records(self) -> dict[str, bytes]:
        return self.records_for(CHAMPION)

    def records_for(self, role: str) -> dict[str, bytes]:
        """Hub id -> the release record the broker retains for it in `role`."""
        with self.changed:
            return {hub: record for (hub, kind), record in self._records.items() if kind == role}

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode,
                    properties: Properties | None) -> None:
        self._connected = not code.is_failure
        self._connack.put(code)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode,
                       properties: Properties | None) -> None:
        if not self._connected:  # closed before any CONNACK: a TLS port, or not MQTT at all
            self._connack.put(CLOSED)

    def __exit__(self, *exc_info) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        """QoS 1, waiting for the broker's PUBACK; a refusal (ACL) is an error."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(PUBLISH_TIMEOUT)
        if not info.is_published():
            raise ReleaseDeliveryError(f"the broker did not acknowledge {topic} within {PUBLISH_TIMEOUT:g} s")
        refusal = self._refused.pop(info.mid, None)
        if refusal is not None:
            raise ReleaseDeliveryError(f"the broker refused to take {topic}: {refusal} "
                                       f"(does the ACL let {self.settings.username or 'this user'} publish there?)")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        # Runs before wait_for_publish returns: paho sets "published" after this callback.
        if reason_code.is_failure:
            self._refused[mid] = str(reason_code)

    @property
    def statuses(self) -> dict[str, dict]:
        with self.changed:
            return {hub: {**status, "state": "offline"} if self._online.get(hub) is False else dict(status)
                    for hub, status in self._statuses.items()}

    def wait_for_change(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def collect(self, seconds: float) -> dict[str, dict]:
        """The statuses received within `seconds` (retained ones arrive first)."""
        time.sleep(seconds)
        return self.statuses

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._sync_topic:
            self._synced.set()
            return
        try:
            hub = hub_of(message.topic)
            document = None if message.topic.endswith("/release") or not message.payload \
                else json.loads(message.payload)
        except (DeliveryError, ValueError):
            return
        with self.changed:
            if message.topic.endswith("/release"):
                key = (hub, SHADOW if message.topic.endswith(f"/{SHADOW}/release") else CHAMPION)
                self._records[key] = bytes(message.payload)  # an empty retained message clears it
                if not message.payload:
                    self._records.pop(key, None)
            elif message.topic.endswith("/online"):
                self._online[hub] = bool(isinstance(document, dict) and document.get("online"))
            elif isinstance(document, dict):
                self._statuses[hub] = document
            else:
                self._statuses.pop(hub, None)
            self.changed.notify_all()


def speaks_tls(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when a TLS handshake succeeds at host:port (the certificate not checked: this
    only tells a TLS port from a plain one, to say what is missing)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ValueError):
        return False
