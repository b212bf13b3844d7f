"""`edgecast keys new DIR`, `edgecast sign models/NAME --key KEY.pem` (or a fleet folder models/FLEET),
`edgecast release`, `edgecast fleet status` and `edgecast fleet promote`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from edgecast.broker_options import (
    BrokerOption,
    CaFileOption,
    CertFileOption,
    KeyFileOption,
    PasswordEnvOption,
    PasswordFileOption,
    TlsOption,
    UsernameOption,
    broker_settings,
)
from edgecast_runtime.releases.delivery import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES
from edgecast_runtime.skill.comparison import DEFAULT_LEVEL, DEFAULT_MARGIN, DEFAULT_MIN_PAIRS

from .console import broker_flags as _broker_flags
from .console import lifetime as _lifetime
from .console import print_decisions as _print_decisions
from .errors import SigningError
from .settings import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_HEALTHY_SECONDS,
    DEFAULT_HUB_TIMEOUT,
    DEFAULT_LIFETIME_TEXT,
    DEFAULT_WAIT_SECONDS,
)

if TYPE_CHECKING:
    from .broker import BrokerSettings

keys_app = typer.Typer(help="Make signing keys.", no_args_is_help=True, add_completion=False)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@keys_app.command("new")
def keys_new(
    folder: Annotated[Path, typer.Argument(help="Folder for private.pem (mode 0600) and public.pem.")],
) -> None:
    """Make an EC P-256 key pair for signing bundles and releases."""
    from .signing import new_keys

    files = new_keys(folder)
    out.print(f"private key {files.private} (keep it secret; mode 0600)", markup=False)
    out.print(f"public key  {files.public} (give it to the hubs: they trust what it verifies)", markup=False)
    if files.unignored_in is not None:
        Console(stderr=True, highlight=False).print(
            f"warning: {files.private} is inside the git work tree {files.unignored_in}, which does not ignore it: "
            f"add its folder to {files.unignored_in / '.gitignore'} before a commit publishes the key",
            markup=False, soft_wrap=True)


def sign(
    bundle: Annotated[Path, typer.Argument(help="Exported model bundle folder models/NAME, or a fleet folder "
                                                "models/FLEET (every station bundle in it).")],
    key: Annotated[Path, typer.Option("--key", help="EC P-256 private key (PEM), e.g. from `edgecast keys new`.")],
) -> None:
    """Sign a bundle's deployable files (OpenSSF model-signing, key mode) into model.sig; given a
    fleet folder, every station bundle in it, one line each (exit 1 if any fails)."""
    from edgecast_runtime.releases.signature import key_id

    from .signing import fleet_bundles, load_private_key, sign_bundle

    stations = [] if (bundle / "manifest.json").is_file() or not bundle.is_dir() else fleet_bundles(bundle)
    if not stations:  # a bundle (or a folder that is neither: sign_bundle says what is missing)
        signed = sign_bundle(bundle, key)
        out.print(f"signed {len(signed.files)} files of {bundle} ({', '.join(signed.files)}) "
                  f"into {signed.signature}, key id {signed.key_id[:16]}", markup=False, soft_wrap=True)
        return
    load_private_key(key)  # a bad key is one error, not one per station
    failed = []
    for station in stations:
        try:
            signed = sign_bundle(station, key)
        except SigningError as exc:
            failed.append(station.name)
            err.print(f"{station.name}: failed: {' '.join(str(exc).split())}", markup=False, soft_wrap=True)
            continue
        out.print(f"{station.name}: signed {len(signed.files)} files into {signed.signature}", markup=False,
                  soft_wrap=True)
    out.print(f"{bundle}: {len(stations) - len(failed)} of {len(stations)} bundle(s) signed with key id "
              f"{key_id(load_private_key(key).public_key())[:16]}"
              + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""), markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


# --- delivery over MQTT: `edgecast release`, `edgecast fleet status` -----------------------

def _settings(broker: str, username: Optional[str], password_file: Optional[str], password_env: Optional[str],
              ca_file: Optional[str], cert_file: Optional[str], key_file: Optional[str], tls: bool) -> BrokerSettings:
    return broker_settings(broker, username, password_file, password_env, ca_file, cert_file, key_file, tls)


def release(
    bundles: Annotated[list[Path], typer.Argument(help="Signed bundles models/FLEET/STATION (the hub id is "
                                                       "STATION), or a fleet folder models/FLEET.")],
    version: Annotated[int, typer.Option("--version", min=1, help="Release version: above every earlier one.")],
    key: Annotated[Path, typer.Option("--key", help="The operator's EC P-256 private key (PEM).")],
    broker: BrokerOption,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime of the record: 30d, 12h, 90m, 3600s.")] = DEFAULT_LIFETIME_TEXT,
    canary: Annotated[str, typer.Option(
        "--canary", help="Hubs that get it first: a number, a percentage, or hub ids (hub-3,hub-5).")] = "1",
    healthy_seconds: Annotated[float, typer.Option(
        "--healthy-seconds", min=0, help="How long the canaries must run it before the rest get it.")] = DEFAULT_HEALTHY_SECONDS,
    max_failures: Annotated[int, typer.Option(
        "--max-failures", min=1, help="Canary failures that stop the rollout.")] = DEFAULT_FAILURE_THRESHOLD,
    hub_timeout: Annotated[float, typer.Option(
        "--hub-timeout", min=1, help="Seconds to wait for a hub's answer.")] = DEFAULT_HUB_TIMEOUT,
    chunk_bytes: Annotated[int, typer.Option(
        "--chunk-bytes", min=1024, max=MAX_CHUNK_BYTES,
        help="File chunk size (at most the hubs' limit, 1 MiB).")] = DEFAULT_CHUNK_BYTES,
    username: UsernameOption = None, password_file: PasswordFileOption = None, password_env: PasswordEnvOption = None,
    ca_file: CaFileOption = None, cert_file: CertFileOption = None, key_file: KeyFileOption = None,
    tls: TlsOption = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check against the hubs' retained statuses and print what would be sent to whom; "
                          "send nothing.")] = False,
    shadow: Annotated[bool, typer.Option(
        "--shadow", help="Send it as a challenger: each hub runs it beside its model on the same readings and "
                         "scores both, never serving it (versions count apart from the hub's own); promote "
                         "it with `edgecast fleet promote`.")] = False,
) -> None:
    """Release signed bundles to their hubs over MQTT: canaries first, then the rest.
    Refused before anything is sent when the version is already released with other
    files; hubs that are offline are skipped with a notice."""
    from edgecast_runtime.releases.delivery import CHAMPION, SHADOW

    from .rollout import find_bundles, parse_canaries, prepare, roll_out

    canary_hubs, canary_percent, canary_names = parse_canaries(canary)
    found = find_bundles(bundles)
    releases = prepare(found, key, version, role=SHADOW if shadow else CHAMPION, expires_in=_lifetime(expires),
                       canary_hubs=canary_hubs,
                       canary_percent=canary_percent, healthy_seconds=healthy_seconds,
                       failure_threshold=max_failures)
    settings = _settings(broker, username, password_file, password_env, ca_file, cert_file, key_file, tls)
    with _broker_flags():
        outcomes = roll_out(settings, releases, canaries=0, canary_hubs=canary_hubs, canary_percent=canary_percent,
                            canary_names=canary_names, healthy_seconds=healthy_seconds, max_failures=max_failures,
                            hub_timeout=hub_timeout, chunk_bytes=chunk_bytes, dry_run=dry_run,
                            progress=lambda message: out.print(message, markup=False, soft_wrap=True))
    if dry_run:
        return
    running = [o.hub for o in outcomes if o.outcome == "healthy"]
    skipped = [o.hub for o in outcomes if o.outcome == "skipped"]
    out.print(f"{'shadow ' if shadow else ''}release {version}: {len(running)} hub(s) running it"
              f"{' in shadow' if shadow else ''}: {', '.join(running)}"
              + (f"; skipped (offline): {', '.join(skipped)}" if skipped else ""), markup=False, soft_wrap=True)


def fleet_status(
    broker: BrokerOption,
    wait: Annotated[float, typer.Option("--wait", min=0.1, help="Seconds to collect the hubs' statuses.")] = DEFAULT_WAIT_SECONDS,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    username: UsernameOption = None, password_file: PasswordFileOption = None, password_env: PasswordEnvOption = None,
    ca_file: CaFileOption = None, cert_file: CertFileOption = None, key_file: KeyFileOption = None,
    tls: TlsOption = False,
) -> None:
    """Every hub's model, release version, state and last error (their retained status)."""
    import json

    from rich.table import Table
    from rich.text import Text

    from .status import COLUMNS, SHADOW_COLUMNS, fleet_status, shadow_skill_rows, status_rows

    with _broker_flags():
        statuses = fleet_status(_settings(broker, username, password_file, password_env, ca_file, cert_file,
                                          key_file, tls), wait)
    if as_json:
        out.print(json.dumps(statuses, indent=2, sort_keys=True), markup=False, soft_wrap=True)
        return
    if not statuses:
        out.print(f"no hub status on {broker} (edgecast/hub/+/status) within {wait:g} s", markup=False)
        return
    from edgecast.tables import console

    table = Table(*COLUMNS)
    for row in status_rows(statuses):  # plain text: a hub's word is never markup
        table.add_row(*(Text(cell) for cell in row))
    console().print(table, soft_wrap=True)  # not a terminal (a pipe): the whole table, no 80-column cut
    skill = shadow_skill_rows(statuses)
    if skill:  # the shadows' rolling skill beside their champions', per lead
        table = Table(*SHADOW_COLUMNS, title="champion and shadow on the same readings")
        for row in skill:
            table.add_row(*(Text(cell) for cell in row))
        console().print(table, soft_wrap=True)


def fleet_promote(
    broker: BrokerOption,
    challenger: Annotated[Optional[Path], typer.Option(
        "--challenger", help="The challenger's fleet folder models/FLEET (its bundle FLEET/HUB goes to HUB); "
                             "needed unless --dry-run.")] = None,
    margin: Annotated[float, typer.Option(
        "--margin", help="Promote only if the challenger's mean squared error is lower by at least this "
                         "fraction.")] = DEFAULT_MARGIN,
    min_pairs: Annotated[int, typer.Option(
        "--min-pairs", help="Fewest scored forecasts (origins) before a hub is judged.")] = DEFAULT_MIN_PAIRS,
    level: Annotated[float, typer.Option(
        "--level", help="One-sided level of the Diebold-Mariano test per run (default: 5 % over 7 weekly "
                        "looks, see results/promotion.md).")] = DEFAULT_LEVEL,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision table; release nothing.")] = False,
    key: Annotated[Optional[Path], typer.Option("--key", help="The operator's EC P-256 private key (PEM).")] = None,
    version: Annotated[Optional[int], typer.Option("--version", min=1, help="Release version of the promotion.")] = None,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime of the record: 30d, 12h, 90m, 3600s.")] = DEFAULT_LIFETIME_TEXT,
    canary: Annotated[str, typer.Option(
        "--canary", help="Winning hubs that get it first: a number, a percentage, or hub ids.")] = "1",
    healthy_seconds: Annotated[float, typer.Option(
        "--healthy-seconds", min=0, help="How long the canaries must run it before the rest get it.")] = DEFAULT_HEALTHY_SECONDS,
    max_failures: Annotated[int, typer.Option("--max-failures", min=1, help="Canary failures that stop the rollout.")] = DEFAULT_FAILURE_THRESHOLD,
    hub_timeout: Annotated[float, typer.Option("--hub-timeout", min=1, help="Seconds to wait for a hub's answer.")] = DEFAULT_HUB_TIMEOUT,
    wait: Annotated[float, typer.Option("--wait", min=0.1, help="Seconds to collect the hubs' statuses.")] = DEFAULT_WAIT_SECONDS,
    shadow_topic: Annotated[Optional[str], typer.Option(
        "--shadow-topic", help="Also read each hub's `shadow` from this topic, + for the hub id (e.g. "
                               "edgecast/hub/+/metrics, the hubs' --status-topic).")] = None,
    username: UsernameOption = None, password_file: PasswordFileOption = None, password_env: PasswordEnvOption = None,
    ca_file: CaFileOption = None, cert_file: CertFileOption = None, key_file: KeyFileOption = None,
    tls: TlsOption = False,
) -> None:
    """Promote a shadowed challenger where the hub's scored pairs show it better: its loss lower by the
    margin over at least --min-pairs forecasts and a Diebold-Mariano test (HAC variance for overlapping
    multi-step forecasts) rejecting equal accuracy at --level. The winners get an ordinary signed release,
    canaries first; every other hub keeps its model, the table says why."""
    from .promote import Rule, check_shadow_topic, decide, promote, shadow_statuses, with_shadows
    from .rollout import parse_canaries
    from .status import fleet_status as read_statuses

    rule = Rule(margin, min_pairs, level)
    if shadow_topic:
        check_shadow_topic(shadow_topic)
    if not dry_run:
        missing = [name for name, value in (("challenger", challenger), ("key", key), ("version", version))
                   if value is None]
        if missing:
            raise SigningError(f"promoting needs {', '.join(missing)} (or a dry run)", settings=missing)
    settings = _settings(broker, username, password_file, password_env, ca_file, cert_file, key_file, tls)
    with _broker_flags():
        statuses = read_statuses(settings, wait)
        if shadow_topic:
            statuses = with_shadows(statuses, shadow_statuses(settings, shadow_topic, wait))
        if dry_run:
            _print_decisions(decide(statuses, rule))
            return
        canary_hubs, canary_percent, canary_names = parse_canaries(canary)
        decisions, outcomes = promote(
            settings, statuses, rule, challenger, key, version,
            release_options={"expires_in": _lifetime(expires), "canary_hubs": canary_hubs,
                             "canary_percent": canary_percent, "healthy_seconds": healthy_seconds,
                             "failure_threshold": max_failures},
            rollout_options={"canary_hubs": canary_hubs, "canary_percent": canary_percent,
                             "canary_names": canary_names, "healthy_seconds": healthy_seconds,
                             "max_failures": max_failures, "hub_timeout": hub_timeout},
            progress=lambda message: out.print(message, markup=False, soft_wrap=True))
    _print_decisions(decisions)
    running = [o.hub for o in outcomes if o.outcome == "healthy"]
    out.print(f"release {version}: challenger promoted on {len(running)} hub(s)"
              + (f": {', '.join(running)}" if running else ""), markup=False, soft_wrap=True)
