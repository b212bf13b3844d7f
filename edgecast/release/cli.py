"""`edgecast keys new DIR` and `edgecast sign models/NAME --key KEY.pem`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

keys_app = typer.Typer(help="Make signing keys.", no_args_is_help=True, add_completion=False)
out = Console(highlight=False)


@keys_app.command("new")
def keys_new(
    folder: Annotated[Path, typer.Argument(help="Folder for private.pem (mode 0600) and public.pem.")],
) -> None:
    """Make an EC P-256 key pair for signing bundles and releases."""
    from .signing import new_keys

    files = new_keys(folder)
    out.print(f"private key {files.private} (keep it secret; mode 0600)", markup=False)
    out.print(f"public key  {files.public} (give it to the hubs: they trust what it verifies)", markup=False)


def sign(
    bundle: Annotated[Path, typer.Argument(help="Exported model bundle folder, e.g. models/NAME.")],
    key: Annotated[Path, typer.Option("--key", help="EC P-256 private key (PEM), e.g. from `edgecast keys new`.")],
) -> None:
    """Sign a bundle's deployable files (OpenSSF model-signing, key mode) into model.sig."""
    from .signing import sign_bundle

    signed = sign_bundle(bundle, key)
    out.print(f"signed {len(signed.files)} files of {bundle} ({', '.join(signed.files)}) "
              f"into {signed.signature}, key id {signed.key_id[:16]}", markup=False, soft_wrap=True)
