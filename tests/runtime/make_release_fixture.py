"""Build the model-signing fixture: a signature made by the real `model-signing`
library (through `edgecast sign`) over the committed models/pm25-seed bundle, so that
the runtime tests, where model-signing is not installed, check the slim verifier
against the library's own output and not only against signatures they make themselves.

Run with the toolkit's Python (it needs edgecast and model-signing):

    .venv/bin/python tests/runtime/make_release_fixture.py

It writes tests/runtime/fixtures/release/: `model.sig` and `public.pem` (the key pair is
made for the occasion and the private key thrown away). The signature covers the
bundle's manifest.json, model.onnx and model.tflite, so it holds as long as they do.
"""

import shutil
import tempfile
from pathlib import Path

from edgecast.release.signing import new_keys, sign_bundle

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "release"
SEED = HERE.parents[1] / "models" / "pm25-seed"


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "pm25-seed"
        shutil.copytree(SEED, bundle)
        keys = new_keys(Path(scratch) / "keys")
        signed = sign_bundle(bundle, keys.private)
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(signed.signature, OUT / "model.sig")
        shutil.copy(keys.public, OUT / "public.pem")
    print(f"wrote {OUT / 'model.sig'} ({', '.join(signed.files)}) and {OUT / 'public.pem'}")


if __name__ == "__main__":
    main()
