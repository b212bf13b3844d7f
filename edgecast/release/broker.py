"""The operator's MQTT connection: authentication and TLS (the runtime's
mqtt_security), publishing that waits for the broker's acknowledgement, and the hubs'
retained status messages (topics: edgecast_runtime.releases.delivery)."""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.mqtt.security import configure_client, parse_broker
from edgecast_runtime.releases.delivery import ONLINE_WILDCARD, STATUS_WILDCARD, DeliveryError, hub_of

from .errors import ReleaseDeliveryError

if TYPE_CHECKING:
    from paho.mqtt import client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

CONNECT_TIMEOUT = 15.0
PUBLISH_TIMEOUT = 30.0


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to log in (mqtt_security.configure_client's options)."""

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
    last status and state "offline"."""

    def __init__(self, settings: BrokerSettings, client_id: str):
        import paho.mqtt.client as mqtt

        self.settings = settings
        self._statuses: dict[str, dict] = {}  # hub id -> its latest status
        self._online: dict[str, bool] = {}
        self.changed = threading.Condition()
        self._connack: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda client, userdata, flags, code, props: self._connack.put(code)
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
        if code is None or code.is_failure:
            self.__exit__()
            raise ReleaseDeliveryError(f"the broker {self.settings.broker} refused the connection: "
                                       f"{code or 'no answer'}")
        self.client.subscribe([(STATUS_WILDCARD, 1), (ONLINE_WILDCARD, 1)])
        return self

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
        try:
            hub = hub_of(message.topic)
            document = json.loads(message.payload) if message.payload else None
        except (DeliveryError, ValueError):
            return
        with self.changed:
            if message.topic.endswith("/online"):
                self._online[hub] = bool(isinstance(document, dict) and document.get("online"))
            elif isinstance(document, dict):
                self._statuses[hub] = document
            else:
                self._statuses.pop(hub, None)
            self.changed.notify_all()
