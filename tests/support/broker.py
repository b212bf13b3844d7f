"""A Mosquitto broker with authentication, an ACL and TLS, for the tests.

`secure_broker` (a pytest fixture) makes, in a temporary folder: a throwaway CA; a
server certificate for 127.0.0.1 and a client certificate per hub (openssl); a password
file (mosquitto_passwd -b) for the hubs and an operator; an ACL; and a mosquitto.conf
with two TLS listeners on 127.0.0.1, free ports, `allow_anonymous false`:

- `port`: user name and password over TLS;
- `cert_port`: the same, and a client certificate signed by the CA is required too;
- `operator_port`: user name and password over TLS, the operator's account only.

On the hubs' listeners (`port`, `cert_port`) the client id is the user name
(`use_username_as_clientid true`): one hub's credentials cannot take over another's
session by connecting with its client id. The operator's tools (`edgecast release`,
`fleet status`, a test's session), which connect several at once under one user name,
use `operator_port`, whose password file holds the operator alone.

The ACL fences each hub to its own topics: it reads and publishes under
`edgecast/hub/<id>/#`, reads and publishes `edgecast/readings/<id>`, and nothing else.
The operator reads and publishes everything under `edgecast/`.
Every process started here is stopped in a finally.
"""

import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.runtime import LOOPBACK, end_process, free_port, mosquitto_binary

HUBS = {"hub-1": "hub-1-secret", "hub-2": "hub-2-secret", "hub-3": "hub-3-secret"}
OPERATOR = ("operator", "operator-secret")
DAYS = "2"


@dataclass
class SecureBroker:
    folder: Path
    port: int
    cert_port: int
    ca_file: Path
    passwords: dict = field(default_factory=dict)  # user -> password
    process: subprocess.Popen = None
    operator_port: int = 0  # the operator's listener (see the module's docstring)

    def password_file(self, user: str) -> Path:
        """The user's password in a file of its own (mode 0600), as a hub keeps it."""
        path = self.folder / f"{user}.password"
        path.write_text(self.passwords[user] + "\n")
        path.chmod(0o600)
        return path

    def client_cert(self, user: str):
        return self.folder / f"{user}.crt", self.folder / f"{user}.key"


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {result.stderr[-1000:]}")


def make_certificates(folder: Path, clients) -> None:
    """ca.crt/ca.key, server.crt/server.key (SAN IP 127.0.0.1 and localhost), and
    NAME.crt/NAME.key for each client, all EC P-256, valid for two days."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", DAYS,
            "-subj", "/CN=edgecast test CA", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extension in [("server", "server.ext"), *[(client, None) for client in clients]]:
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", DAYS, *(["-extfile", extension] if extension else []), cwd=folder)


def make_password_file(path: Path, passwords: dict) -> None:
    for number, (user, password) in enumerate(passwords.items()):
        flags = ["-c"] if number == 0 else []
        result = subprocess.run(["mosquitto_passwd", *flags, "-b", str(path), user, password],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"mosquitto_passwd failed: {result.stderr}")


def acl_text(operator: str, operator_reads=()) -> str:
    """`operator_reads`: more topics the operator may read (benchmarks/ adds `$SYS/#`)."""
    return (f"user {operator}\n"
            "topic readwrite edgecast/#\n"
            + "".join(f"topic read {topic}\n" for topic in operator_reads) + "\n"
            "# every other user is a hub, fenced to its own topics (%u is the user name)\n"
            "pattern readwrite edgecast/hub/%u/#\n"
            "pattern readwrite edgecast/readings/%u\n")


def config_text(broker: SecureBroker) -> str:
    """Per-listener settings: the hubs' listeners bind the client id to the user name,
    the operator's listener takes only the operator's account."""
    folder = broker.folder
    tls = (f"cafile {folder / 'ca.crt'}\ncertfile {folder / 'server.crt'}\nkeyfile {folder / 'server.key'}\n"
           "tls_version tlsv1.2\n")
    hubs = (f"allow_anonymous false\npassword_file {folder / 'passwd'}\nacl_file {folder / 'acl'}\n"
            "use_username_as_clientid true\n")
    operator = (f"allow_anonymous false\npassword_file {folder / 'operator.passwd'}\n"
                f"acl_file {folder / 'acl'}\n")
    # Started as root, mosquitto drops to the user `mosquitto`, who cannot read this
    # test's files; it stays the user running the tests instead.
    user = pwd.getpwuid(os.geteuid()).pw_name
    return (f"user {user}\nper_listener_settings true\nlog_dest file {folder / 'mosquitto.log'}\n\n"
            f"listener {broker.port} {LOOPBACK}\n{hubs}{tls}require_certificate false\n\n"
            f"listener {broker.cert_port} {LOOPBACK}\n{hubs}{tls}require_certificate true\n\n"
            f"listener {broker.operator_port} {LOOPBACK}\n{operator}{tls}require_certificate false\n")


def start(broker: SecureBroker) -> None:
    log = open(broker.folder / "mosquitto.out", "ab")
    try:
        broker.process = subprocess.Popen([mosquitto_binary(), "-c", str(broker.folder / "mosquitto.conf")],
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    wait_listening(broker, (broker.port, broker.cert_port, broker.operator_port))


def wait_listening(broker: SecureBroker, ports) -> None:
    deadline = time.monotonic() + 10
    pending = list(ports)
    while pending and time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise AssertionError(f"mosquitto exited: {read_logs(broker)}")
        try:
            socket.create_connection((LOOPBACK, pending[0]), timeout=0.5).close()
            pending.pop(0)
        except OSError:
            time.sleep(0.05)
    if pending:
        raise AssertionError(f"mosquitto did not listen on {pending} within 10 s: {read_logs(broker)}")


def read_logs(broker: SecureBroker) -> str:
    return "".join(path.read_text(errors="replace")[-2000:]
                   for path in (broker.folder / "mosquitto.out", broker.folder / "mosquitto.log") if path.exists())


def stop(broker: SecureBroker) -> None:
    end_process(broker.process)


@pytest.fixture
def secure_broker(tmp_path):
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (tests/runtime/setup.sh installs it)")
    folder = tmp_path / "broker"
    folder.mkdir()
    passwords = {**HUBS, OPERATOR[0]: OPERATOR[1]}
    make_certificates(folder, list(passwords))
    make_password_file(folder / "passwd", passwords)
    make_password_file(folder / "operator.passwd", dict([OPERATOR]))
    (folder / "acl").write_text(acl_text(OPERATOR[0]))
    broker = SecureBroker(folder, free_port(), free_port(), folder / "ca.crt", passwords, operator_port=free_port())
    (folder / "mosquitto.conf").write_text(config_text(broker))
    try:
        start(broker)
        yield broker
    finally:
        stop(broker)
