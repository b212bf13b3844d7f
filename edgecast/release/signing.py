"""Keys and OpenSSF model-signing signatures of a bundle's deployable files.

What is signed: `manifest.json` and every artifact it lists with kind `onnx` or
`tflite` (model.onnx, model.tflite and the quantized variants such as
model.int8.onnx): every file a hub or a microcontroller loads. The toolkit's own files
(model.keras, preprocessing.json, metrics.json, training.json, windows.npz, plots) are
left out, as ignored paths recorded in the signature, so `model_signing verify` and the
hub's slim verifier both check the bundle folder as it is. Any other file that appears
later is "not covered by the signature" and refused, by both.

The signature is `model.sig` in the bundle: a sigstore bundle made by the model-signing
library in key mode (EC P-256), the file that `model_signing verify key` checks.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast_runtime.contract import MANIFEST_NAME, ONNX_FILE
from edgecast_runtime.durable import atomic_write
from edgecast_runtime.errors import SignatureError
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.releases.signature import SIGNATURE_NAME, key_id, verify_bundle

from .errors import SigningError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

PRIVATE_KEY_NAME = "private.pem"
PUBLIC_KEY_NAME = "public.pem"
DEPLOYABLE_KINDS = ("onnx", "tflite")


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path
    unignored_in: Path | None = None  # the git work tree that would commit the private key


def git_tree_not_ignoring(path: Path) -> Path | None:
    """The top of the git work tree holding `path` when git does not ignore it (a `git add
    -A` would commit it); None outside a work tree, when it is ignored, or without git."""
    git = shutil.which("git")
    folder = Path(path).parent
    if git is None or not folder.is_dir():
        return None
    try:
        top = subprocess.run([git, "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0:
            return None
        ignored = subprocess.run([git, "-C", str(folder), "check-ignore", "-q", "--", Path(path).name],
                                 capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(top.stdout.strip()) if ignored.returncode == 1 else None


@dataclass(frozen=True)
class SignedBundle:
    signature: Path
    files: list[str]
    key_id: str


def new_keys(out_dir: Path) -> KeyFiles:
    """A new EC P-256 key pair in `out_dir`: private.pem (PKCS#8, mode 0600) and
    public.pem. Existing keys are never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out_dir = Path(out_dir)
    files = KeyFiles(out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME)
    for path in (files.private, files.public):
        if path.exists():
            raise SigningError(f"{path} already exists; refusing to overwrite a key (choose another folder)")
    if out_dir.exists() and not out_dir.is_dir():
        raise SigningError(f"{out_dir} is not a folder")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_private(files.private, private_pem, 0o600)
    _write_private(files.public, public_pem, 0o644)
    return replace(files, unignored_in=git_tree_not_ignoring(files.private))


def deployable_files(bundle_dir: Path) -> list[str]:
    """The files `sign_bundle` signs, each checked against the manifest's sha256."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise SigningError(f"{bundle_dir} is not a bundle folder")
    manifest_path = bundle_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SigningError(f"{manifest_path} is missing; run `edgecast export {bundle_dir}` first") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SigningError(f"{manifest_path}: cannot read the manifest ({exc})") from None
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, dict):
        raise SigningError(f"{manifest_path} has no 'artifacts' table")
    names = sorted(name for name, entry in artifacts.items()
                   if isinstance(entry, dict) and entry.get("kind") in DEPLOYABLE_KINDS)
    if ONNX_FILE not in names:
        raise SigningError(f"{manifest_path} lists no {ONNX_FILE}; run `edgecast export {bundle_dir}` first")
    for name in names:
        path = bundle_dir / name
        if Path(name).name != name or not path.is_file() or path.is_symlink():
            raise SigningError(f"{path}: listed in {MANIFEST_NAME} but not a file in the bundle")
        if file_sha256(path) != str(artifacts[name].get("sha256", "")).lower():
            raise SigningError(f"{path}: sha256 differs from {MANIFEST_NAME}; re-export before signing")
    return [MANIFEST_NAME, *names]


def fleet_bundles(fleet_dir: Path) -> list[Path]:
    """The station bundles of a fleet folder: its sub-folders that hold a manifest.json or a
    model (a station's folder without a manifest is listed, so that it fails alone, saying why);
    the fleet's own folders (.staging, hidden ones) are not. None: an empty list."""
    fleet_dir = Path(fleet_dir)
    return sorted(p for p in fleet_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / MANIFEST_NAME).is_file() or (p / "model.keras").is_file()))


def sign_bundle(bundle_dir: Path, key_path: Path) -> SignedBundle:
    """Sign the bundle's deployable files with the model-signing library (key mode),
    writing `model.sig` atomically, then check it with the hub's own verifier."""
    from model_signing import hashing, signing

    bundle_dir = Path(bundle_dir)
    files = deployable_files(bundle_dir)
    public_key = load_private_key(key_path).public_key()
    ignored = _ignored_entries(bundle_dir, files)
    config = (signing.Config()
              .use_elliptic_key_signer(private_key=Path(key_path))
              .set_hashing_config(hashing.Config().set_ignored_paths(paths=ignored)))
    with tempfile.TemporaryDirectory(prefix="edgecast-sign-") as scratch:
        scratch_signature = Path(scratch) / SIGNATURE_NAME
        try:
            config.sign(bundle_dir, scratch_signature)
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot sign {bundle_dir}: {exc}") from None
        atomic_write(bundle_dir / SIGNATURE_NAME, scratch_signature.read_bytes())
    try:
        signed = verify_bundle(bundle_dir, public_key)
    except SignatureError as exc:  # the bundle changed while it was being signed
        raise SigningError(f"the new signature does not verify: {exc}") from None
    if sorted(signed.files) != sorted(files):
        raise SigningError(f"{bundle_dir}: the signature covers {sorted(signed.files)}, expected {files}")
    return SignedBundle(bundle_dir / SIGNATURE_NAME, files, key_id(public_key))


def load_private_key(key_path: Path) -> EllipticCurvePrivateKey:
    """An unencrypted EC P-256 private key from a PEM file, or a SigningError saying why not."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_path = Path(key_path)
    try:
        pem = key_path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the key {key_path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SigningError(f"{key_path} is password-protected; use an unencrypted key "
                           f"(`edgecast keys new` makes one, readable by its owner only)") from None
    except ValueError:
        raise SigningError(f"{key_path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningError(f"{key_path} is not an EC P-256 private key (`edgecast keys new` makes one)")
    return key


def _ignored_entries(bundle_dir: Path, files: list[str]) -> list[str]:
    """Every top-level entry that is not signed, and the signature itself."""
    entries = []
    for entry in sorted(bundle_dir.iterdir()):
        if entry.is_symlink():
            raise SigningError(f"{entry} is a symbolic link; a signed bundle holds none")
        if entry.name not in files:
            entries.append(entry.name)
    return sorted(set(entries) | {SIGNATURE_NAME})


def _write_private(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise SigningError(f"cannot write {path}: {exc.strerror or exc}") from None
