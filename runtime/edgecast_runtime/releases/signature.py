"""A slim verifier of OpenSSF model-signing signatures (key mode), for the hub.

The toolkit signs a bundle with the `model-signing` library (`edgecast sign`); that
library, with sigstore and protobuf, is far too heavy for a hub, so this module checks
the same file with `cryptography` and the standard library alone.

The signature file (`model.sig`) is a sigstore bundle (JSON, media type v0.3) holding a
DSSE envelope: a base64 in-toto statement and one ECDSA signature over the DSSE
pre-authentication encoding (PAE) of it. The statement's predicate
(`https://model_signing/signature/v1.0`) lists every signed file with its sha256
(`resources`), the paths left out of the signature (`serialization.ignore_paths`), and
its one subject's digest is the sha256 of all the file digests in order.

Verification, in order: the key hint names the trusted key; the signature verifies over
the PAE with that key; the statement is well formed and its root digest matches; then
the folder holds exactly the signed files (none extra, none missing, outside the
ignored paths) and each file's sha256 is the signed one. Like `model_signing verify`,
any symbolic link in the folder is refused. Differences, all stricter: one signature
exactly, only sha256 file serialization (what `edgecast sign` makes), no pre-1.0
(v0.2) signature formats, and a statement that signs no file is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:  # the hub installed the runtime without its releases extra
    raise ImportError("signed releases need the 'cryptography' package: "
                      "pip install 'edgecast-runtime[releases]'") from None

from edgecast_runtime.contract import SIGNATURE_NAME
from edgecast_runtime.errors import SignatureError
from edgecast_runtime.manifest import file_sha256

if TYPE_CHECKING:
    from collections.abc import Iterable

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
CHUNK = 1 << 20
# The curves model-signing accepts, each with the hash it signs with.
CURVE_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}

PublicKey = ec.EllipticCurvePublicKey  # the operator's key, as release records name it
PublicKeySource = Union[bytes, str, os.PathLike, PublicKey]


@dataclass(frozen=True)
class SignedFiles:
    """What a verified signature covers: the model's name and each file's sha256."""

    model_name: str
    files: Dict[str, str]
    key_id: str
    ignore_paths: Tuple[str, ...] = ()  # left out of the signature when it was made


def load_public_key(source: PublicKeySource) -> ec.EllipticCurvePublicKey:
    """A trusted EC public key from PEM bytes, a PEM file's path, or a loaded key."""
    if isinstance(source, ec.EllipticCurvePublicKey):
        key = source
    else:
        label = "the trusted key" if isinstance(source, bytes) else str(source)
        try:
            pem = source if isinstance(source, bytes) else Path(source).read_bytes()
        except OSError as exc:
            raise SignatureError(f"cannot read the trusted key {label}: {exc.strerror or exc}", "key") from None
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise SignatureError(f"{label} is not a PEM public key", "key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SignatureError(f"{label} is not an elliptic-curve public key", "key")
    if key.curve.name not in CURVE_HASHES:
        raise SignatureError(f"unsupported curve {key.curve.name} (use P-256)", "key")
    return key


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the key's PEM (SubjectPublicKeyInfo): model-signing's key hint."""
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """True when `signature` (DER) is the key's ECDSA signature of `message`."""
    try:
        key.verify(signature, message, ec.ECDSA(CURVE_HASHES[key.curve.name]()))
    except InvalidSignature:
        return False
    return True


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the envelope's signature signs."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def verify_bundle(folder: str | Path, trusted_key: PublicKeySource,
                  signature_path: str | Path | None = None) -> SignedFiles:
    """Check that `folder` holds exactly the files its signature (default
    `folder/model.sig`) covers, unchanged, signed by `trusted_key`.
    Raises SignatureError, whose `reason` is one of: unsigned, malformed, wrong-key,
    bad-signature, files, key."""
    folder = Path(folder)
    signature_path = Path(signature_path) if signature_path is not None else folder / SIGNATURE_NAME
    key = load_public_key(trusted_key)
    try:
        text = signature_path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{folder} is not signed: {signature_path} is missing", "unsigned") from None
    except OSError as exc:
        raise SignatureError(f"cannot read {signature_path}: {exc.strerror or exc}", "unsigned") from None
    signed = signed_statement(text, key, str(signature_path))
    check_folder(folder, signed, signature_path, signed.ignore_paths)
    return signed


def signed_statement(signature_bytes: bytes, key: ec.EllipticCurvePublicKey, label: str = "the signature") -> SignedFiles:
    """The files a model-signing signature covers, once its signature verifies with `key`."""
    bundle = _json_object(signature_bytes, label)
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"{label}: media type {bundle.get('mediaType')!r} is not {BUNDLE_MEDIA_TYPE}", "malformed")
    trusted_id = key_id(key)
    hint = _field(bundle, ("verificationMaterial", "publicKey", "hint"), label, required=False)
    if hint is not None and hint != trusted_id:
        raise SignatureError(f"{label} was signed with another key (key id {str(hint)[:16]}..., "
                             f"trusted {trusted_id[:16]}...)", "wrong-key")
    envelope = _field(bundle, ("dsseEnvelope",), label)
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise SignatureError(f"{label}: payload type {envelope.get('payloadType')!r} is not {PAYLOAD_TYPE}", "malformed")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise SignatureError(f"{label}: expected exactly one signature in the envelope", "malformed")
    payload = _base64(envelope.get("payload"), "dsseEnvelope.payload", label)
    signature = _base64(signatures[0].get("sig"), "dsseEnvelope.signatures[0].sig", label)
    if not verify_ecdsa(key, signature, pae(PAYLOAD_TYPE, payload)):
        raise SignatureError(f"{label}: the signature does not verify with the trusted key "
                             f"(signed by another key, or the statement was changed)", "bad-signature")
    return _read_statement(_json_object(payload, f"{label} (statement)"), label, trusted_id)


def check_folder(folder: Path, signed: SignedFiles, signature_path: Optional[Path] = None,
                 ignore_paths: Iterable[str] = ()) -> None:
    """The folder's files, outside `ignore_paths` and the signature file, must be
    exactly the signed ones with the signed sha256."""
    ignored = [PurePosixPath(p).parts for p in ignore_paths]
    if signature_path is not None:
        try:
            ignored.append(Path(os.path.relpath(signature_path, folder)).parts)
        except ValueError:  # another drive (Windows): the signature lies outside the folder
            pass
    present = _folder_files(folder, ignored)
    problems = []
    extra = sorted(set(present) - set(signed.files))
    missing = sorted(set(signed.files) - set(present))
    if extra:
        problems.append("files not covered by the signature: " + ", ".join(extra))
    if missing:
        problems.append("signed files missing: " + ", ".join(missing))
    changed = [name for name in sorted(set(present) & set(signed.files))
               if file_sha256(folder / name) != signed.files[name]]
    if changed:
        problems.append("sha256 differs from the signed one: " + ", ".join(changed))
    if problems:
        raise SignatureError(f"{folder}: " + "; ".join(problems), "files")


def _read_statement(statement: dict, label: str, trusted_id: str) -> SignedFiles:
    if statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"{label}: statement type {statement.get('_type')!r} is not {STATEMENT_TYPE}", "malformed")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"{label}: predicate type {statement.get('predicateType')!r} is not "
                             f"{PREDICATE_TYPE}", "malformed")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise SignatureError(f"{label}: expected exactly one subject in the statement", "malformed")
    root = _field(subjects[0], ("digest", "sha256"), label)
    serialization_args = _field(statement, ("predicate", "serialization"), label)
    if serialization_args.get("method") != "files" or serialization_args.get("hash_type") != "sha256":
        raise SignatureError(f"{label}: only sha256 file-by-file signatures are supported, got method "
                             f"{serialization_args.get('method')!r} hash {serialization_args.get('hash_type')!r}",
                             "malformed")
    resources = _field(statement, ("predicate", "resources"), label)
    if not isinstance(resources, list) or not resources:
        raise SignatureError(f"{label}: the statement signs no file", "malformed")
    files, root_digest = {}, hashlib.sha256()
    for resource in resources:
        name, digest = _resource(resource, label)
        if name in files:
            raise SignatureError(f"{label}: {name} is listed twice", "malformed")
        files[name] = digest
        root_digest.update(bytes.fromhex(digest))
    if root_digest.hexdigest() != root:
        raise SignatureError(f"{label}: the subject digest does not match the listed files", "malformed")
    ignore = serialization_args.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise SignatureError(f"{label}: serialization.ignore_paths is not a list of paths", "malformed")
    # An ignored path outside the model means nothing (model-signing drops it too).
    return SignedFiles(str(subjects[0].get("name", "")), files, trusted_id, tuple(p for p in ignore if _is_inside(p)))


def _resource(resource: Any, label: str) -> tuple[str, str]:
    if not isinstance(resource, dict):
        raise SignatureError(f"{label}: a resource is not an object", "malformed")
    name, digest = resource.get("name"), resource.get("digest")
    if resource.get("algorithm") != "sha256":
        raise SignatureError(f"{label}: {name} is not hashed with sha256", "malformed")
    if not isinstance(name, str) or not _is_inside(name) or name in ("", "."):
        raise SignatureError(f"{label}: resource name {name!r} is not a path inside the model", "malformed")
    if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
        raise SignatureError(f"{label}: {name} has no sha256 digest", "malformed")
    return name, digest.lower()


def _folder_files(folder: Path, ignored: list[tuple[str, ...]]) -> list:
    """Relative names of the regular files under `folder`, outside the ignored paths;
    any symbolic link is refused, as model-signing refuses it."""
    if not folder.is_dir():
        raise SignatureError(f"{folder} is not a folder", "files")
    names = []
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            if os.path.islink(os.path.join(root, entry)):
                raise SignatureError(f"{os.path.join(root, entry)} is a symbolic link; signed folders hold none",
                                     "files")
        for entry in files:
            relative = PurePosixPath(Path(os.path.relpath(os.path.join(root, entry), folder)).as_posix())
            if not any(relative.parts[:len(parts)] == tuple(parts) for parts in ignored):
                names.append(str(relative))
    return names


def _is_inside(path: str) -> bool:
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _json_object(data: bytes, label: str) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError(f"{label} is not JSON", "malformed") from None
    if not isinstance(value, dict):
        raise SignatureError(f"{label} is not a JSON object", "malformed")
    return value


def _field(value: dict, keys: tuple[str, ...], label: str, required: bool = True) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            if required:
                raise SignatureError(f"{label} has no {'.'.join(keys)}", "malformed")
            return None
    return value


def _base64(text: Any, name: str, label: str) -> bytes:
    if not isinstance(text, str):
        raise SignatureError(f"{label} has no {name}", "malformed")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{label}: {name} is not base64", "malformed") from None
