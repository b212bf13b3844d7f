"""Typed errors: every failure the runtime reports is one of these, with a message
that names the file, field or shape involved, so a CLI can print it on one line
and a server can map it to a status code."""

from __future__ import annotations


class EdgecastRuntimeError(Exception):
    """Base of every error the runtime raises on purpose. `settings`: the settings its
    message names (`neighbour_wait`, `token_file`: the library's names, never a
    command-line flag), which the command line says as its flags."""

    def __init__(self, *args: object, setting: str | tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.settings = (setting,) if isinstance(setting, str) else tuple(setting)


class ModelError(EdgecastRuntimeError):
    """The model file is missing, unreadable, not ONNX, or breaks the graph contract."""


class RunTimeoutError(ModelError):
    """A model call ran past its `run_timeout` and was stopped (deadline.py): its run
    time depends on the input's values, or the hub is starved. `model`, `seconds`: which
    model, and the limit."""

    def __init__(self, message: str, setting: str | tuple[str, ...] = (), model: str = "",
                 seconds: float = 0.0) -> None:
        super().__init__(message, setting=setting)
        self.model = model
        self.seconds = seconds


class SchemaVersionError(ModelError):
    """The model carries an `edgecast.schema_version` this runtime does not know."""


class IntegrityError(ModelError):
    """The model's sha256 disagrees with the manifest beside it (or the manifest is unusable)."""


class InputError(EdgecastRuntimeError):
    """Bad input from a caller: a window, a reading, a request body."""


class InputShapeError(InputError):
    """A window or reading has the wrong shape; the message says expected vs got."""


class InputValueError(InputError):
    """A window or reading holds non-numeric or non-finite values, or a bad timestamp."""


class StateError(EdgecastRuntimeError):
    """The streaming state file is corrupt, belongs to another model, or cannot be written."""


class StateMismatchError(StateError):
    """The state file was written for a model that reads other inputs (see
    state.stream_inputs); the opt-in policy `on_state_mismatch="fresh"` starts afresh."""


class SignatureError(EdgecastRuntimeError):
    """Files are not what the trusted key signed: no or a malformed signature, another
    key, a bad signature, or a file changed, added or missing. `reason` is a short code
    for a hub's status message."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReleaseError(EdgecastRuntimeError):
    """A release is refused: a malformed record, a version not above the running one, an
    expired record, or a model that fails its self-test. `reason` is a short code for a
    hub's status message; `version` the refused record's version, once it is known."""

    def __init__(self, message: str, reason: str, version: "int | None" = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.version = version


class BrokerSecurityError(EdgecastRuntimeError):
    """The MQTT credentials or TLS files cannot be used: a missing or unreadable password
    file or variable, a password without a user name, a bad CA or client certificate."""


class OptionError(EdgecastRuntimeError):
    """Options that cannot work together, found once they are combined with the model
    (a subscription that would hear the hub's own messages): a usage error, exit code 2."""
