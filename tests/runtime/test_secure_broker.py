"""MQTT with authentication, an ACL and TLS (tests/support/broker.py): an anonymous client, a
wrong password, a client that does not trust the broker's CA (or skips TLS), a missing
client certificate where one is required, and a hub publishing outside its ACL are each
refused; a hub set up with edgecast_runtime.mqtt.security connects and publishes.
Also the password's sources (a file, an environment variable, never argv)."""

import queue
import re
import ssl

import paho.mqtt.client as mqtt
import pytest
from support.runtime import LOOPBACK

from edgecast_runtime.errors import BrokerSecurityError
from edgecast_runtime.mqtt.security import configure_client, read_password

TIMEOUT = 10


class Session:
    """A paho-mqtt v5 client whose callbacks land in a queue, stopped in `close`."""

    def __init__(self, client_id: str):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.events = queue.Queue()
        self.messages = queue.Queue()
        self.client.on_connect = lambda client, userdata, flags, code, props: self.events.put(("connack", code))
        self.client.on_disconnect = lambda client, userdata, flags, code, props: self.events.put(("gone", code))
        self.client.on_publish = lambda client, userdata, mid, code, props: self.events.put(("puback", mid, code))
        self.client.on_subscribe = lambda client, userdata, mid, codes, props: self.events.put(("suback", codes))
        self.client.on_message = lambda client, userdata, message: self.messages.put(
            (message.topic, message.payload))
        self.started = False

    def connect(self, port: int) -> str:
        """'connected', or how the connection was refused."""
        try:
            self.client.connect(LOOPBACK, port, keepalive=10)
        except ssl.SSLCertVerificationError as exc:
            return f"certificate: {exc.verify_message}"
        except (ssl.SSLError, OSError) as exc:
            return f"tls: {exc}"
        self.client.loop_start()
        self.started = True
        event = self.next_event()
        if event[0] == "connack" and not event[1].is_failure:
            return "connected"
        return f"{event[0]}: {event[1]}"

    def next_event(self):
        try:
            return self.events.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no answer from the broker within {TIMEOUT} s") from None

    def publish(self, topic: str, payload: bytes):
        """The broker's PUBACK reason code (QoS 1)."""
        info = self.client.publish(topic, payload, qos=1)
        event = self.next_event()
        assert event[0] == "puback" and event[1] == info.mid, event
        return event[2]

    def close(self) -> None:
        if self.started:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def sessions():
    opened = []

    def open_session(client_id: str) -> Session:
        session = Session(client_id)
        opened.append(session)
        return session

    try:
        yield open_session
    finally:
        for session in opened:
            session.close()


def hub(sessions, broker, user="hub-1", **options) -> Session:
    session = sessions(user)
    configure_client(session.client, username=user, password_file=broker.password_file(user),
                     ca_file=broker.ca_file, **options)
    return session


def test_anonymous_client_is_refused(secure_broker, sessions):
    session = sessions("anonymous")
    session.client.tls_set(ca_certs=str(secure_broker.ca_file))
    assert session.connect(secure_broker.port) == "connack: Not authorized"


def test_wrong_password_is_refused(secure_broker, sessions, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    session = sessions("hub-1")
    configure_client(session.client, username="hub-1", password_file=wrong, ca_file=secure_broker.ca_file)
    assert session.connect(secure_broker.port) in ("connack: Not authorized", "connack: Bad user name or password")


def test_client_without_the_ca_is_refused(secure_broker, sessions):
    """A client that verifies the broker with the system's CAs only: the throwaway CA is
    not among them, so the handshake fails before any password is sent."""
    session = sessions("hub-1")
    session.client.username_pw_set("hub-1", secure_broker.passwords["hub-1"])
    session.client.tls_set()
    outcome = session.connect(secure_broker.port)
    assert outcome in ("certificate: self-signed certificate in certificate chain",
                       "certificate: unable to get local issuer certificate"), outcome


def test_client_without_tls_is_refused(secure_broker, sessions):
    session = sessions("hub-1")
    session.client.username_pw_set("hub-1", secure_broker.passwords["hub-1"])
    outcome = session.connect(secure_broker.port)
    assert outcome != "connected" and outcome.startswith(("gone", "tls")), outcome


def test_client_certificate_required_where_the_listener_asks(secure_broker, sessions):
    """With TLS 1.3 the client learns of the refusal after its side of the handshake:
    as an SSL error or as the connection closed before any CONNACK."""
    without = hub(sessions, secure_broker)
    outcome = without.connect(secure_broker.cert_port)
    assert outcome.startswith(("tls:", "gone:")), outcome
    cert, key = secure_broker.client_cert("hub-1")
    with_cert = hub(sessions, secure_broker, cert_file=cert, key_file=key)
    assert with_cert.connect(secure_broker.cert_port) == "connected"


def test_hub_is_fenced_by_the_acl(secure_broker, sessions):
    """hub-1 may publish only under edgecast/hub/hub-1/# and edgecast/readings/hub-1:
    elsewhere the broker answers Not authorized and delivers nothing."""
    operator = sessions("operator")
    configure_client(operator.client, username="operator", password_file=secure_broker.password_file("operator"),
                     ca_file=secure_broker.ca_file)
    assert operator.connect(secure_broker.port) == "connected"
    operator.client.subscribe("edgecast/#", qos=1)
    assert operator.next_event()[0] == "suback"
    session = hub(sessions, secure_broker)
    assert session.connect(secure_broker.port) == "connected"
    for topic in ("edgecast/hub/hub-2/status", "edgecast/readings/hub-2", "edgecast/releases/current", "other"):
        assert str(session.publish(topic, b"forged")) == "Not authorized", topic
    for topic in ("edgecast/readings/hub-1", "edgecast/hub/hub-1/status"):
        assert not session.publish(topic, b"ok").is_failure
    received = [operator.messages.get(timeout=TIMEOUT) for _ in range(2)]
    assert received == [("edgecast/readings/hub-1", b"ok"), ("edgecast/hub/hub-1/status", b"ok")]
    assert operator.messages.empty()  # none of the forged messages came through


def test_hub_cannot_read_another_hubs_topics(secure_broker, sessions):
    """Mosquitto grants the subscription and applies the ACL on delivery: what the
    operator sends to hub-2 never reaches hub-1."""
    session = hub(sessions, secure_broker)
    assert session.connect(secure_broker.port) == "connected"
    session.client.subscribe([("edgecast/hub/hub-2/#", 1), ("edgecast/hub/hub-1/#", 1)])
    assert session.next_event()[0] == "suback"
    operator = sessions("operator")
    configure_client(operator.client, username="operator", password_file=secure_broker.password_file("operator"),
                     ca_file=secure_broker.ca_file)
    assert operator.connect(secure_broker.port) == "connected"
    for topic in ("edgecast/hub/hub-2/release", "edgecast/hub/hub-1/release"):
        assert not operator.publish(topic, topic.encode()).is_failure
    assert session.messages.get(timeout=TIMEOUT) == ("edgecast/hub/hub-1/release", b"edgecast/hub/hub-1/release")
    assert session.messages.empty()


def test_password_from_the_environment(secure_broker, sessions, monkeypatch):
    monkeypatch.setenv("EDGECAST_MQTT_PASSWORD", secure_broker.passwords["hub-2"])
    session = sessions("hub-2")
    configure_client(session.client, username="hub-2", password_env="EDGECAST_MQTT_PASSWORD",
                     ca_file=secure_broker.ca_file)
    assert session.connect(secure_broker.port) == "connected"
    assert not session.publish("edgecast/hub/hub-2/status", b"up").is_failure


def test_password_sources(tmp_path, monkeypatch):
    path = tmp_path / "password"
    path.write_text("s3cret\nignored second line\n")
    assert read_password(password_file=path) == "s3cret"
    monkeypatch.setenv("HUB_PASSWORD", "from-env")
    assert read_password(password_env="HUB_PASSWORD") == "from-env"
    assert read_password() is None


@pytest.mark.parametrize("options, fragment", [
    ({"password_file": "PATH", "password_env": "HUB_PASSWORD"}, "not both"),
    ({"password_file": "ABSENT"}, "cannot read the MQTT password file"),
    ({"password_env": "EDGECAST_UNSET_VARIABLE"}, "EDGECAST_UNSET_VARIABLE (the MQTT password) is not set"),
    ({"username": None, "password_file": "PATH"}, "without a user name"),
    ({"ca_file": "ABSENT"}, "cannot read the MQTT CA file"),
    ({"key_file": "PATH"}, "key was given without its certificate"),
    ({"ca_file": "PATH"}, "cannot use the MQTT TLS files"),
])
def test_configuration_errors_name_the_problem(tmp_path, options, fragment):
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    names = {"PATH": str(path), "ABSENT": str(tmp_path / "absent")}
    options = {"username": "hub-1", **{key: names.get(value, value) for key, value in options.items()}}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hub-1")
    with pytest.raises(BrokerSecurityError, match=re.escape(fragment)):
        configure_client(client, **options)
