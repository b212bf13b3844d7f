"""`serve`'s bearer token (http.auth): required on every endpoint but /healthz when
given, 401 JSON without it; beyond loopback, no start without a token unless the
network is declared trusted."""

import http.client

import pytest
from support.runtime import LOOPBACK, ONE, Background, Server, assert_one_line_error, run_cli

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("auth") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    instance = Server(ONE, "--token-file", token_file)
    try:
        yield instance
    finally:
        instance.kill()


@pytest.mark.parametrize("method, path, body", [("GET", "/v1/model", None),
                                                ("POST", "/v1/predict", {"window": [1, 2, 3, 4]}),
                                                ("POST", "/v1/observe", {"values": [1]}),
                                                ("GET", "/nowhere", None)])
def test_401_without_the_token(guarded, method, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"},
                    {"Authorization": f"Basic {TOKEN}"}):
        status, answer, response_headers = guarded.request(method, path, body, headers)
        assert status == 401, (status, answer)
        assert answer["status"] == 401 and "Bearer" in answer["error"]
        assert response_headers["Content-Type"] == "application/json"
        assert response_headers["WWW-Authenticate"].startswith("Bearer")


def test_the_token_opens_every_endpoint_and_healthz_needs_none(guarded):
    assert guarded.request("GET", "/healthz")[0] == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.request("GET", "/healthz", headers=headers)[0] == 200
    assert guarded.request("GET", "/v1/model", headers=headers)[0] == 200
    status, answer, _ = guarded.request("POST", "/v1/predict", {"window": [1, 2, 3, 4]}, headers)
    assert status == 200 and answer["forecast"] == [pytest.approx(3.5)], answer


def test_beyond_loopback_without_a_token_refuses_to_start():
    result = run_cli("serve", ONE, "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert_one_line_error(result, 1, "--token-file", "--trusted-network")


def test_healthz_without_the_token_says_only_whether_the_hub_is_up(guarded):
    """A probe needs no token, but the state path, counts and model sha256 are for
    those who hold it (issue 26)."""
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"}):
        status, answer, _ = guarded.request("GET", "/healthz", headers=headers)
        assert (status, answer) == (200, {"status": "ok"})
    status, answer, _ = guarded.request("GET", "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and answer["status"] == "ok" and answer["model_sha256"] and "stream" in answer


def test_healthz_without_a_token_configured_keeps_its_details():
    with Server(ONE) as server:
        status, answer, _ = server.request("GET", "/healthz")
        assert status == 200 and answer["model_sha256"] and "stream" in answer and "watcher" in answer


def test_a_token_file_open_to_others_is_refused_with_how_to_fix_it(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for mode in (0o644, 0o640, 0o604, 0o620):
        token_file.chmod(mode)
        assert_one_line_error(run_cli("serve", ONE, "--token-file", token_file), 1,
                              f"mode {mode:04o}", f"chmod 600 {token_file}")


def test_a_fifo_or_folder_as_token_file_is_refused_at_once(tmp_path):
    import os
    import time

    fifo = tmp_path / "token-fifo"
    os.mkfifo(fifo, 0o600)
    started = time.monotonic()
    result = run_cli("serve", ONE, "--token-file", fifo, timeout=20)  # opened without blocking
    assert_one_line_error(result, 1, "is not a regular file")
    assert time.monotonic() - started < 10
    assert_one_line_error(run_cli("serve", ONE, "--token-file", tmp_path), 1, "is not a regular file")


def test_a_short_or_missing_token_file_refuses_to_start(tmp_path):
    short = tmp_path / "short"
    short.write_text("secret\n")
    short.chmod(0o600)
    assert_one_line_error(run_cli("serve", ONE, "--token-file", short), 1, "shorter than 16")
    assert_one_line_error(run_cli("serve", ONE, "--token-file", tmp_path / "none"), 1, "cannot read the token file")


def test_trusted_network_serves_beyond_loopback_without_a_token():
    with Background("serve", ONE, "--host", "0.0.0.0", "--port", "0", "--trusted-network") as server:
        event = server.wait_event("listening")
        assert event["token_required"] is False
        connection = http.client.HTTPConnection(LOOPBACK, event["port"], timeout=10)
        try:
            connection.request("GET", "/v1/model")
            assert connection.getresponse().status == 200
        finally:
            connection.close()
