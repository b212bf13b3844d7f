"""What the long-running commands (`stream`, `serve`, `mqtt`) share: the streaming
forecaster with its scorer, the model holder and its watcher, and signal handling.
Every setting is a named parameter (the command line's parsing stays in cli/)."""

from __future__ import annotations

import signal
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple, Union

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.logs import log_event
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.policy import StreamPolicy
from edgecast_runtime.reload import DEFAULT_POLL_SECONDS, ModelHolder, ModelWatcher
from edgecast_runtime.skill.rolling import SkillSettings, open_scorer
from edgecast_runtime.streaming import StreamingForecaster

if TYPE_CHECKING:
    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.shadow import ShadowSlot

FilePath = Union[str, Path]  # a model or state file, as text or a Path


def open_streamer(model: Forecaster, *, state: Optional[FilePath] = None,
                  policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
                  skill: Optional[SkillSettings] = None, shadow: Optional[ShadowSlot] = None
                  ) -> StreamingForecaster:
    """The streaming forecaster of `model`, scoring its forecasts (skill/rolling.py) when the
    sampling interval is known, and its `shadow`'s beside them; a state file written for
    another model with the same inputs is adopted with a notice in the log."""
    policy = policy or StreamPolicy()
    streamer = StreamingForecaster(model, state_path=state, policy=policy, clock=clock,
                                   log=log_event)
    try:  # after the state file's lock: its errors come first, and name the cause
        scorer = open_scorer(model, Path(state) if state else None,
                             policy.interval_seconds or model.interval_seconds,
                             skill or SkillSettings(), log_event)
        if scorer is not None:
            scorer.shadow = shadow  # before the reconciliation: its pair is made again too
            streamer.attach_scorer(scorer)
    except BaseException:
        streamer.close()
        raise
    return streamer


def warn_if_memory_only(state: Optional[FilePath]) -> None:
    """Said once the command has started, so a start-up error stays the only line."""
    if not state:
        log_event({"event": "notice", "message": "no --state: buffered readings are kept in "
                                                 "memory only and lost on restart"})


def open_holder(model_path: FilePath, *, threads: int = DEFAULT_THREADS,
                state: Optional[FilePath] = None, policy: Optional[StreamPolicy] = None,
                clock: Optional[tzinfo] = None, poll_interval: float = DEFAULT_POLL_SECONDS,
                skill: Optional[SkillSettings] = None, loading: ModelLoading = SERVICE_LOADING,
                shadow: Optional[ShadowSlot] = None) -> Tuple[ModelHolder, StreamingForecaster, ModelWatcher]:
    """The model holder, a streamer that follows its swaps, and a started watcher
    thread that reloads the model when its file is replaced or on SIGHUP
    (`poll_interval` 0: on SIGHUP only). A `shadow` slot runs beside the holder's model."""
    holder = ModelHolder(model_path, threads=threads, log=log_event, loading=loading)
    if shadow is not None:
        shadow.attach(holder)
    streamer = open_streamer(holder.current, state=state, policy=policy, clock=clock, skill=skill,
                             shadow=shadow)

    def follow(new: Forecaster, old: Forecaster) -> None:
        outcome = streamer.use_model(new)
        log_event({"event": "stream_model_changed", "sha256": new.sha256, "outcome": outcome})

    holder.on_swap(follow)
    watcher = ModelWatcher(holder, interval=poll_interval or None)
    return holder, streamer, watcher.start()


def on_signals(handlers: dict) -> None:
    for name, handler in handlers.items():
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame, h=handler: h())
