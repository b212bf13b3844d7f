"""`edgecast fleet retrain`: a thin typer layer over edgecast/release/retrain.py."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from edgecast import options as opt
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
from edgecast.cli_options import Settings, with_options
from edgecast.trainer.settings import MODELS_DIR
from edgecast_runtime.skill.comparison import DEFAULT_LEVEL, DEFAULT_MARGIN, DEFAULT_MIN_PAIRS

from .settings import DEFAULT_FAILURE_THRESHOLD, DEFAULT_HEALTHY_SECONDS, DEFAULT_HUB_TIMEOUT, DEFAULT_LIFETIME_TEXT

out = Console(highlight=False)


@with_options(*opt.RETRAIN)
def fleet_retrain(
    archive: Annotated[Path, typer.Argument(help="The readings archive (edgecast collect --archive).")],
    settings: Settings,
    key: Annotated[Path, typer.Option("--key", help="The operator's EC P-256 private key (PEM).")],
    broker: BrokerOption,
    plan: Annotated[Optional[Path], typer.Option(
        "--plan", help="The plan file carried from one run to the next (default: MODELS_DIR/NAME.plan.json).")] = None,
    name: Annotated[str, typer.Option("--name", help="Challenger fleets go to MODELS_DIR/NAME-rROUND.")] = "retrain",
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where fleets live.")] = MODELS_DIR,
    days: Annotated[float, typer.Option("--days", min=1, help="Train on the archive's last DAYS days.")] = 365.0,
    until: Annotated[Optional[str], typer.Option(
        "--until", help="End of the training window (exclusive; default: the archive's last reading).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="Stations trained at once (default: the cluster's CPUs), as fleet train's.")] = None,
    address: Annotated[Optional[str], typer.Option(
        "--address", help="Join a Ray cluster to train, as fleet train's (default: a local one).")] = None,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, help="Seconds this run waits for the hubs' scored pairs before it exits (a later run goes "
                              "on).")] = 0.0,
    max_wait: Annotated[str, typer.Option(
        "--max-wait", help="Decide after this long in shadow even with too few pairs: 56d, 12h.")] = "56d",
    margin: Annotated[float, typer.Option("--margin", help="As fleet promote's.")] = DEFAULT_MARGIN,
    min_pairs: Annotated[int, typer.Option("--min-pairs", min=1, help="As fleet promote's.")] = DEFAULT_MIN_PAIRS,
    level: Annotated[float, typer.Option("--level", help="As fleet promote's.")] = DEFAULT_LEVEL,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime of the records: 30d, 12h.")] = DEFAULT_LIFETIME_TEXT,
    canary: Annotated[str, typer.Option("--canary", help="Hubs that get each release first.")] = "1",
    healthy_seconds: Annotated[float, typer.Option(
        "--healthy-seconds", min=0, help="How long canaries run a release before the rest get it.")] = DEFAULT_HEALTHY_SECONDS,
    max_failures: Annotated[int, typer.Option("--max-failures", min=1, help="Canary failures that stop a rollout.")] = DEFAULT_FAILURE_THRESHOLD,
    hub_timeout: Annotated[float, typer.Option("--hub-timeout", min=1, help="Seconds to wait for a hub's answer.")] = DEFAULT_HUB_TIMEOUT,
    username: UsernameOption = None, password_file: PasswordFileOption = None, password_env: PasswordEnvOption = None,
    ca_file: CaFileOption = None, cert_file: CertFileOption = None, key_file: KeyFileOption = None,
    tls: TlsOption = False,
) -> None:
    """Keep the models current, one round at a time: train a challenger fleet on the archive's recent
    readings, sign it, release it in shadow, wait for the hubs' scored pairs, promote where it wins
    (fleet promote's rule). Each run carries the plan on from its last finished step; run it from cron."""
    from .console import broker_flags, lifetime, print_decisions
    from .promote import Rule
    from .retrain import RetrainSettings, retrain
    from .rollout import parse_canaries, parse_duration

    try:
        longest = parse_duration(max_wait)
    except Exception as exc:
        raise typer.BadParameter(str(exc), param_hint="'--max-wait'") from None
    config = RetrainSettings(archive, plan or models_dir / f"{name}.plan.json", models_dir, name, key, days, until,
                             wait, longest)
    canary_hubs, canary_percent, canary_names = parse_canaries(canary)
    release_options = {"expires_in": lifetime(expires), "canary_hubs": canary_hubs, "canary_percent": canary_percent,
                       "healthy_seconds": healthy_seconds, "failure_threshold": max_failures}
    rollout_options = {"canary_hubs": canary_hubs, "canary_percent": canary_percent, "canary_names": canary_names,
                       "healthy_seconds": healthy_seconds, "max_failures": max_failures, "hub_timeout": hub_timeout}
    connection = broker_settings(broker, username, password_file, password_env, ca_file, cert_file, key_file, tls)
    with broker_flags():
        training = {**settings, "workers": workers, "address": address}
        _, decisions = retrain(config, connection, training, Rule(margin, min_pairs, level), release_options,
                               rollout_options, lambda message: out.print(message, markup=False, soft_wrap=True))
    if decisions:
        print_decisions(decisions)
