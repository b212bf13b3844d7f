"""Client ids bound to the user name on the hubs' listeners (issue 26): with
`use_username_as_clientid true` (tests/support/broker.py, docs/releases.md), hub-2's
credentials connecting with client id `hub-1` get the id `hub-2`, so hub-1 stays
connected with its session; without it (the control, a listener left as before) the
same connection throws hub-1 off. The operator's listener takes only the operator."""

from support.runtime import LOOPBACK
from test_secure_broker import hub, sessions  # noqa: F401  (the fixture)

from edgecast_runtime.mqtt.security import configure_client


def takeover(secure_broker, sessions, port: int) -> bool:  # noqa: F811
    """Whether hub-2's credentials with client id hub-1 disconnect hub-1 on `port`."""
    victim = hub(sessions, secure_broker, "hub-1")
    assert victim.connect(port) == "connected"
    attacker = sessions("hub-1")  # hub-2's password, hub-1's client id
    configure_client(attacker.client, username="hub-2", password_file=secure_broker.password_file("hub-2"),
                     ca_file=secure_broker.ca_file)
    assert attacker.connect(port) == "connected"
    try:
        event = victim.events.get(timeout=3)
    except Exception:
        return False
    return event[0] == "gone"


def test_another_hubs_credentials_cannot_take_a_hubs_client_id(secure_broker, sessions):  # noqa: F811
    assert "use_username_as_clientid true" in (secure_broker.folder / "mosquitto.conf").read_text()
    assert not takeover(secure_broker, sessions, secure_broker.port)


def test_the_operator_listener_refuses_a_hubs_credentials(secure_broker, sessions):  # noqa: F811
    session = hub(sessions, secure_broker, "hub-2")
    assert session.connect(secure_broker.operator_port) in ("connack: Not authorized",
                                                            "connack: Bad user name or password")
    operator = sessions("operator-tool")
    configure_client(operator.client, username="operator", password_file=secure_broker.password_file("operator"),
                     ca_file=secure_broker.ca_file)
    assert operator.connect(secure_broker.operator_port) == "connected"


def test_without_the_binding_the_takeover_works(secure_broker, sessions, tmp_path):  # noqa: F811
    """The control: the same broker, its hubs' listener without use_username_as_clientid."""
    import subprocess

    from support import broker as broker_support
    from support.runtime import free_port

    config = secure_broker.folder / "mosquitto.conf"
    text = config.read_text().replace("use_username_as_clientid true\n", "", 1)
    open_port = free_port()
    text = text.replace(f"listener {secure_broker.port} {LOOPBACK}", f"listener {open_port} {LOOPBACK}", 1)
    (tmp_path / "open.conf").write_text(text.replace(str(secure_broker.cert_port), str(free_port()))
                                        .replace(str(secure_broker.operator_port), str(free_port())))
    process = subprocess.Popen([broker_support.mosquitto_binary(), "-c", str(tmp_path / "open.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        probe = broker_support.SecureBroker(secure_broker.folder, open_port, open_port, secure_broker.ca_file,
                                            secure_broker.passwords, process)
        broker_support.wait_listening(probe, (open_port,))
        assert takeover(secure_broker, sessions, open_port)
    finally:
        broker_support.end_process(process)
