"""The runtime's bad-input corpus: one table entry per case, each with the
input, the channel it arrives by, the expected exit code or HTTP status, and a
fragment of the expected message. Every case also checks that no traceback was
printed, that nothing hung (every subprocess and socket has a timeout), and that
no half-written file was left (no `.*.tmp` beside a state file, the state file
whole JSON holding exactly the readings acknowledged).

Channels:
  model   `edgecast-runtime info MODEL` on a bad model file          -> exit 3
  predict `edgecast-runtime predict ONE --json WINDOW` (and flat args) -> exit 4 (2: usage)
  http    a request to `serve` (module-wide server, --max-body 4096,
          --request-timeout 1)                                        -> 4xx JSON
  stream  one bad line between good ones on `stream --state`         -> an error answer,
          exit 0, the good lines before and after accepted
  state   `stream --state FILE` where FILE is unusable               -> exit 5, FILE untouched
"""

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.runtime import (
    FIXTURES,
    ONE,
    ONE_REEXPORT,
    ONE_V2,
    SCHEMA2,
    THREE,
    Server,
    add_count,
    assert_one_line_error,
    cli_path,
    record,
    run_cli,
)

MAX_BODY = 4096


@dataclass(frozen=True)
class Case:
    id: str
    channel: str
    data: object  # what is sent; see each channel's runner
    expect: int  # exit code or HTTP status
    fragment: str


def _model_files(folder: Path) -> dict:
    """Bad model files made at test time (the rest are committed fixtures)."""
    made = {}
    (folder / "empty.onnx").write_bytes(b"")
    made["empty"] = folder / "empty.onnx"
    (folder / "garbage.onnx").write_bytes(bytes(range(256)) * 8)
    made["garbage"] = folder / "garbage.onnx"
    (folder / "text.onnx").write_text("this is not a model\n")
    made["text"] = folder / "text.onnx"
    (folder / "a-folder.onnx").mkdir()
    made["folder"] = folder / "a-folder.onnx"
    made["absent"] = folder / "absent.onnx"
    manifest = (FIXTURES / "bundle" / "manifest.json").read_text()
    for name, model, manifest_text in [
        ("sha_mismatch", ONE_V2, manifest),
        ("manifest_malformed", ONE, "{not json"),
        ("manifest_unlisted", ONE, '{"artifacts": {"other.onnx": {"sha256": "00"}}}'),
        ("manifest_not_object", ONE, "[1, 2]"),
        ("schema2_sha_mismatch", SCHEMA2, manifest),
        ("changed", ONE_REEXPORT, manifest),  # the same model's name, other bytes
    ]:
        bundle = folder / name
        bundle.mkdir()
        shutil.copyfile(model, bundle / "model.onnx")
        (bundle / "manifest.json").write_text(manifest_text)
        made[name] = bundle / "model.onnx"
    head = ONE.read_bytes()
    (folder / "truncated_tail.onnx").write_bytes(head[:-40])
    made["truncated_tail"] = folder / "truncated_tail.onnx"
    return made


MODEL_CASES = [
    Case("truncated ONNX (half)", "model", FIXTURES / "truncated.onnx", 3, "not a loadable ONNX model"),
    Case("truncated ONNX (last 40 bytes cut)", "model", "truncated_tail", 3, "not a loadable ONNX model"),
    Case("empty file", "model", "empty", 3, "the file is empty"),
    Case("random bytes", "model", "garbage", 3, "not a loadable ONNX model"),
    Case("a text file", "model", "text", 3, "not a loadable ONNX model"),
    Case("a folder", "model", "folder", 3, "is a folder, not a model file"),
    Case("no such file", "model", "absent", 3, "model file not found"),
    Case("another tool's model (no edgecast metadata)", "model", FIXTURES / "no_metadata.onnx", 3,
         "no edgecast metadata"),
    Case("wrong schema version (99)", "model", FIXTURES / "schema_99.onnx", 3,
         "schema version '99' is not supported by this runtime (it knows 1, 2, 3, 4)"),
    Case("spec metadata missing", "model", FIXTURES / "missing_spec.onnx", 3, "edgecast.spec metadata is missing"),
    Case("spec not JSON", "model", FIXTURES / "bad_spec_json.onnx", 3, "edgecast.spec is not valid JSON"),
    Case("spec disagrees with the graph", "model", FIXTURES / "spec_mismatch.onnx", 3, "inconsistent with the spec"),
    Case("input tensor named otherwise", "model", FIXTURES / "wrong_input_name.onnx", 3,
         "expected one input named 'window'"),
    Case("manifest of another bundle", "model", "sha_mismatch", 3,
         "manifest.json describes another model ('fixture-one'"),
    Case("manifest of another bundle (schema 2)", "model", "schema2_sha_mismatch", 3,
         "manifest.json describes another model ('fixture-one'"),
    Case("model file changed after export", "model", "changed", 3, "the file was changed or corrupted"),
    Case("malformed valid_ranges", "model", FIXTURES / "bad_valid_ranges.onnx", 3,
         "valid_ranges['PM2.5'] [500.0, 0.0]: the minimum is above the maximum"),
    Case("manifest not JSON", "model", "manifest_malformed", 3, "cannot read the manifest"),
    Case("manifest without the model", "model", "manifest_unlisted", 3, "has no sha256 for model.onnx"),
    Case("manifest not an object", "model", "manifest_not_object", 3, "has no sha256 for model.onnx"),
]

PREDICT_CASES = [
    Case("NaN in a window", "predict", "[1, NaN, 3, 4]", 4, "non-finite value at [1]"),
    Case("Infinity in a window", "predict", "[1, 2, Infinity, 4]", 4, "non-finite value at [2]"),
    Case("-Infinity in a window", "predict", "[-Infinity, 2, 3, 4]", 4, "non-finite value at [0]"),
    Case("a string in a window", "predict", '[1, 2, "x", 4]', 4, "non-numeric value 'x' at [2]"),
    Case("null in a window", "predict", "[1, null, 3, 4]", 4, "missing value (null) at [1]"),
    Case("a boolean in a window", "predict", "[1, true, 3, 4]", 4, "non-numeric value True at [1]"),
    Case("an object in a window", "predict", '[1, {"v": 2}, 3, 4]', 4, "non-numeric value"),
    Case("nested lists", "predict", "[[[[1]]], 2, 3, 4]", 4, "equal-length rows"),
    Case("ragged rows", "predict", "[[1], [2, 3], [4], [5]]", 4, "equal-length rows"),
    Case("nested too deeply", "predict", "[" * 3000 + "]" * 3000, 4, "nested too deeply"),
    Case("beyond float32", "predict", "[1e39, 2, 3, 4]", 4, "beyond float32 range"),
    Case("beyond float64", "predict", "[1, 2, 3, " + "9" * 400 + "]", 4, "beyond float32 range"),
    Case("too short", "predict", "[1, 2, 3]", 4, "expected a window of shape [4, 1]"),
    Case("too long", "predict", "[1, 2, 3, 4, 5]", 4, "got shape [5]"),
    Case("empty window", "predict", "[]", 4, "got shape [0]"),
    Case("empty batch", "predict", "[[]]", 4, "got shape [1, 0]"),
    Case("a bare number", "predict", "42", 4, "got shape []"),
    Case("not JSON", "predict", "[1, 2,", 4, "--json is not valid JSON"),
    Case("flat text value", "predict", ["70", "72", "abc", "80"], 4, "non-numeric value 'abc' at [2]"),
    Case("flat too few values", "predict", ["70", "72"], 4, "got shape [2]"),
    Case("flat NaN value", "predict", ["70", "nan", "75", "80"], 4, "non-finite value at [1]"),
    Case("schema 2: unknown compass point", "predict",
         ("schema2", '[[50, 10, "N", 0, 0], [50, 10, "NORTH-ISH", 1, 0], [50, 10, 90, 2, 0], '
                     '[50, 10, "S", 3, 0]]'), 4, "is not a wind direction"),
    Case("schema 2: flat values for a 5-feature model", "predict", ("schema2", ["1", "2", "3", "4"]), 4,
         "reads 5 features"),
]

HTTP_CASES = [
    Case("body over --max-body", "http", ("POST", "/v1/predict", b'{"window": [' + b"1.0, " * 2000 + b"1]}"),
         413, f"exceeds the limit of {MAX_BODY} bytes"),
    Case("Content-Length over the limit, no body sent", "http",
         ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\n"), 413, "exceeds"),
    Case("malformed JSON", "http", ("POST", "/v1/predict", b'{"window": [1, 2'), 400, "malformed JSON"),
    Case("empty body", "http", ("POST", "/v1/predict", b""), 400, "empty request body"),
    Case("not UTF-8", "http", ("POST", "/v1/predict", b"\xff\xfe\x00{"), 400, "not UTF-8"),
    Case("JSON nested too deeply", "http", ("POST", "/v1/predict", b"[" * 2000 + b"]" * 2000), 400,
         "nested too deeply"),
    Case("neither window nor windows", "http", ("POST", "/v1/predict", b'{"win": [1, 2, 3, 4]}'), 400,
         'either "window"'),
    Case("NaN over HTTP", "http", ("POST", "/v1/predict", b'{"window": [1, NaN, 3, 4]}'), 422, "non-finite"),
    Case("string over HTTP", "http", ("POST", "/v1/predict", b'{"window": [1, "2", 3, 4]}'), 422, "non-numeric"),
    Case("huge number over HTTP", "http", ("POST", "/v1/predict", b'{"window": [1, 2, 3, 1e308]}'), 422,
         "beyond float32"),
    Case("nested lists over HTTP", "http", ("POST", "/v1/predict", b'{"window": [[1, [2]], 3, 4, 5]}'), 422,
         "equal-length rows"),
    Case("wrong length over HTTP", "http", ("POST", "/v1/predict", b'{"window": [1, 2, 3, 4, 5, 6]}'), 422,
         "expected a window of shape [4, 1]"),
    Case("batch over --max-batch", "http", ("POST", "/v1/predict", json.dumps({"windows": [[1, 2, 3, 4]] * 9}).encode()),
         422, "exceeds the limit of 8"),
    Case("observe: wrong value count", "http", ("POST", "/v1/observe", b'{"values": [1, 2]}'), 422, "got 2"),
    Case("observe: bad timestamp", "http", ("POST", "/v1/observe", b'{"value": 1, "timestamp": "soon"}'), 422,
         "neither seconds since the epoch nor ISO 8601"),
    Case("observe: nested value", "http", ("POST", "/v1/observe", b'{"values": [[1]]}'), 422, "must be a number"),
    Case("no Content-Length", "http", ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n\r\n"), 411,
         "Content-Length header is required"),
    Case("chunked body", "http", ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"4\r\n[1]\n\r\n0\r\n\r\n"), 411, "chunked bodies are not supported"),
    Case("negative Content-Length", "http",
         ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n"), 400, "invalid Content-Length"),
    Case("body shorter than Content-Length (stalls)", "http",
         ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 80\r\n\r\n{\"window\""), 408, "timed out"),
    Case("request line never finished", "http", ("raw", b"POST /v1/pre"), 408, "did not arrive within 1 s"),
    Case("headers never finished", "http", ("raw", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"), 408,
         "did not arrive within 1 s"),
    Case("slow loris: a byte every 0.25 s", "http", ("trickle", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X" * 40),
         408, "did not arrive within 1 s"),
    Case("garbage request line", "http", ("raw", b"\x00\x01\x02 nonsense\r\n\r\n"), 400, "Bad HTTP/0.9 request type"),
    Case("unknown method", "http", ("raw", b"BREW /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"), 501, "Unsupported method"),
    Case("request line too long", "http", ("raw", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"), 414, "URI Too Long"),
    Case("Content-Length 2_0 (int() reads 20)", "http",
         ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2_0\r\n\r\n"), 400,
         "invalid Content-Length"),
    Case("two Content-Length headers", "http",
         ("raw", b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"),
         400, "2 Content-Length headers"),
    Case("a text/plain body (cross-site)", "http",
         ("raw", b"POST /v1/observe HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                 b"\r\n{}"), 415, "Content-Type: application/json"),
    Case("a foreign Host (DNS rebinding)", "http", ("raw", b"GET /v1/model HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
         421, "does not answer to the host 'evil.example'"),
    Case("no Host in HTTP/1.1", "http", ("raw", b"GET /healthz HTTP/1.1\r\n\r\n"), 400, "need a Host header"),
    Case("request head over 16 KiB", "http",
         ("raw", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + (b"X-Pad: " + b"a" * 1000 + b"\r\n") * 17 + b"\r\n"),
         431, "larger than 16384 bytes"),
    Case("over 100 headers", "http",
         ("raw", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: abc\r\n" * 120 + b"\r\n"), 431,
         "got more than 100 headers"),
    Case("unknown path", "http", ("GET", "/admin", None), 404, "no such endpoint"),
    Case("wrong method", "http", ("DELETE", "/v1/predict", None), 405, "use POST"),
]

GOOD = ["2026-01-01T00:00:00Z,10", "2026-01-01T01:00:00Z,20"]
AFTER = "2026-01-01T02:00:00Z,30"
STREAM_CASES = [
    Case("stream: not a number", "stream", "2026-01-01T01:30:00Z,abc", 0, "not a number: 'abc'"),
    Case("stream: too many fields", "stream", "1,2,3", 0, "expected 1 CSV value(s)"),
    Case("stream: malformed JSON", "stream", '{"value": 1', 0, "malformed JSON"),
    Case("stream: JSON nested too deeply", "stream", "[" * 5000 + "]" * 5000, 0, "nested too deeply"),
    Case("stream: nested list value", "stream", '{"values": [[5]]}', 0, "must be a number"),
    Case("stream: out-of-order timestamp", "stream", "2025-12-31T00:00:00Z,5", 0, "time order"),
    Case("stream: same timestamp, other value", "stream", "2026-01-01T01:00:00Z,21", 0,
         "a different reading was already accepted"),
    Case("stream: bad timestamp", "stream", "yesterday,5", 0, "neither seconds since the epoch nor ISO 8601"),
    Case("stream: infinite timestamp", "stream", '{"value": 5, "timestamp": 1e999}', 0, "timestamp must be finite"),
    Case("stream: not UTF-8", "stream", b"\xff\xfe\xfd", 0, "not UTF-8"),
    Case("stream: a line over 64 KiB", "stream", "1" * (70 * 1024), 0, "longer than 65536 bytes"),
    Case("stream: empty line", "stream", "", 0, "empty line"),
]

STATE_CASES = [
    Case("state: not JSON", "state", "{half a state", 5, "is not a valid state file"),
    Case("state: another program's JSON", "state", '{"hello": 1}', 5, "not an edgecast-runtime stream state"),
    Case("state: another model's state", "state", "other-model", 5, "written for another model"),
    Case("state: unknown state version", "state", "version-9", 5, "state version 9 is not supported"),
    Case("state: buffer of the wrong width", "state", "bad-buffer", 5, "is not a valid state file"),
    Case("state: folder is a file", "state", "parent-is-a-file", 5, "cannot open"),
]

CASES = MODEL_CASES + PREDICT_CASES + HTTP_CASES + STREAM_CASES + STATE_CASES


def test_the_corpus_is_large_enough():
    record("corpus", cases=len(CASES), **{f"{channel}_cases": sum(c.channel == channel for c in CASES)
                                          for channel in ("model", "predict", "http", "stream", "state")})
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def made_models(tmp_path_factory):
    return _model_files(tmp_path_factory.mktemp("corpus-models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("corpus-serve") / "state.json"
    instance = Server(ONE, "--state", state, "--max-body", MAX_BODY, "--max-batch", 8,
                      "--request-timeout", 1, "--poll-interval", "0")
    try:
        yield instance
    finally:
        instance.kill()
        not_json = [line for line in instance.stderr_lines if not line.startswith("{")]
        assert not_json == [], not_json[:10]  # no traceback, ever
        assert not list(state.parent.glob(".*.tmp"))


def _passed(case):
    add_count("corpus", "passed")


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: c.id)
def test_model_case(case, made_models):
    path = made_models.get(case.data, case.data) if isinstance(case.data, str) else case.data
    result = run_cli("info", path, timeout=30)
    assert_one_line_error(result, case.expect, case.fragment)
    assert result.stdout == ""
    _passed(case)


@pytest.mark.parametrize("case", PREDICT_CASES, ids=lambda c: c.id)
def test_predict_case(case):
    model, data = (SCHEMA2, case.data[1]) if isinstance(case.data, tuple) else (ONE, case.data)
    args = ["predict", model, *data] if isinstance(data, list) else ["predict", model, "--json", data]
    result = run_cli(*args, timeout=30)
    assert_one_line_error(result, case.expect, case.fragment)
    assert result.stdout == ""
    _passed(case)


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.id)
def test_http_case(case, server):
    kind, *rest = case.data
    started = time.monotonic()
    if kind in ("raw", "trickle"):
        answer = server.raw(rest[0], trickle_every=0.25 if kind == "trickle" else None)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1:2] == [str(case.expect).encode()], answer[:200]
        document = json.loads(body)
    else:
        path, body = rest
        status, document, headers = server.request(kind, path, body, timeout=15)
        assert status == case.expect, (status, document)
        assert headers["Content-Type"] == "application/json"
    assert time.monotonic() - started < 8  # cut off by the deadline, not hanging
    assert document["status"] == case.expect and case.fragment in document["error"], document
    assert "Traceback" not in document["error"]
    status, health, _ = server.request("GET", "/healthz")  # still serving
    assert status == 200 and health["status"] == "ok"
    _passed(case)


@pytest.mark.parametrize("case", STREAM_CASES, ids=lambda c: c.id)
def test_stream_case(case, tmp_path):
    state = tmp_path / "state.json"
    bad = case.data if isinstance(case.data, bytes) else case.data.encode()
    stdin = ("\n".join(GOOD) + "\n").encode() + bad + b"\n" + AFTER.encode() + b"\n"
    result = subprocess.run([cli_path(), "stream", str(ONE), "--state", str(state)], input=stdin,
                            capture_output=True, timeout=30)
    assert result.returncode == case.expect, result.stderr
    assert b"Traceback" not in result.stderr
    answers = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(answers) == 4, answers  # one answer per line, whatever the line
    assert answers[2]["status"] == "error" and case.fragment in answers[2]["error"], answers[2]
    assert [a.get("accepted") for a in (answers[0], answers[1], answers[3])] == [1, 2, 3]
    document = json.loads(state.read_text())
    assert document["accepted"] == 3 and document["last_timestamp"] == 1767232800.0
    # No temporary file left; the forecast store closed cleanly (no -wal/-shm left).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock",
                                                          "state.json.scores.sqlite"]
    _passed(case)


def _state_file(case, tmp_path: Path) -> Path:
    state = tmp_path / "state.json"
    if case.data == "parent-is-a-file":
        (tmp_path / "not-a-folder").write_text("a file\n")
        return tmp_path / "not-a-folder" / "state.json"
    if case.data == "other-model":  # another model, reading other inputs
        run_cli("stream", THREE, "--state", state, stdin="1,2,3\n4,5,6\n", timeout=30)
        return state
    if case.data in ("version-9", "bad-buffer"):
        run_cli("stream", ONE, "--state", state, stdin="1\n2\n", timeout=30)
        document = json.loads(state.read_text())
        if case.data == "version-9":
            document["version"] = 9
        if case.data == "bad-buffer":
            document["buffer"] = [[1.0, 2.0, 3.0]] * 2
        state.write_text(json.dumps(document))
        return state
    state.write_text(case.data)
    return state


@pytest.mark.parametrize("case", STATE_CASES, ids=lambda c: c.id)
def test_state_case(case, tmp_path):
    state = _state_file(case, tmp_path)
    before = state.read_bytes() if state.exists() else None
    result = run_cli("stream", ONE, "--state", state, stdin="5\n", timeout=30)
    assert_one_line_error(result, case.expect, case.fragment)
    assert result.stdout == ""  # refused before reading anything
    assert (state.read_bytes() if state.exists() else None) == before  # untouched
    _passed(case)
