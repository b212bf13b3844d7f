"""Shadow releases on the hub (`edgecast release --shadow`): a challenger delivered like
any release (a signed record whose `role` is "shadow", on edgecast/hub/ID/shadow/...:
releases/delivery.py), verified and self-tested in the trial's child by the same code,
installed in RELEASE_DIR/shadow/ with versions of its own, and loaded into the shadow
slot (shadow.py) instead of replacing the champion. Its status is the `shadow` part of
the hub's status: its state, version and sha256 (what `edgecast release` watches, as
for a champion), why it was refused or dropped, and its scored pairs against the
champion (skill/pairs.py), which `edgecast fleet promote` judges.

A challenger dropped while running (it failed forecasting, or the new champion reads
other inputs) is dropped for good: its pointer is removed and its record remembered as
refused, so neither a restart nor the broker's retained record brings it back."""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING, Callable, Optional

from edgecast_runtime.logs import log_event
from edgecast_runtime.releases.assembly import MAX_BUFFERED_BYTES, MAX_BUFFERED_CHUNKS, ChunkStore
from edgecast_runtime.releases.delivery import SHADOW, SHADOW_REPORT_SECONDS
from edgecast_runtime.releases.folder import CURRENT_NAME, now_text
from edgecast_runtime.releases.updates import HubUpdater
from edgecast_runtime.shadow import DROPPED, PROMOTED, RUNNING, ShadowSlot

if TYPE_CHECKING:
    from edgecast_runtime.admission import ModelLoading
    from edgecast_runtime.skill.rolling import StreamScorer

SHADOW_FOLDER = "shadow"
# The shadow's receiver buffers at most half the champion's budget (a hub's models are
# kilobytes to a few MiB): both filled by a flood stay well inside the unit's memory cap.
SHADOW_BUFFERED_BYTES = MAX_BUFFERED_BYTES // 2


class ShadowUpdater(HubUpdater):
    """Receives shadow records beside `champion` (the hub's HubUpdater) and publishes
    through the champion's status."""

    role = SHADOW

    def __init__(self, champion: HubUpdater, log: Callable[[dict], None] = log_event,
                 report_seconds: float = SHADOW_REPORT_SECONDS) -> None:
        store = ChunkStore(max_bytes=SHADOW_BUFFERED_BYTES, max_chunks=MAX_BUFFERED_CHUNKS // 2)
        super().__init__(champion.hub_id, champion.trusted_key, champion.release_dir / SHADOW_FOLDER, None, log,
                         store=store)
        self.champion = champion
        self.report_seconds = report_seconds
        self._reported = -math.inf  # when new pairs last republished the status (monotonic)
        self._report_due = False
        self.scorer: Optional[StreamScorer] = None
        self.slot: Optional[ShadowSlot] = None
        self._status["state"] = "none" if self.version is None else "installed"

    def open_slot(self, slot: ShadowSlot) -> None:
        """Load the installed challenger (if any) into `slot` before the hub starts."""
        self.slot = slot
        slot.listeners.append(self._slot_changed)
        if self.model_path is None:
            return
        try:
            slot.switch_to(self.model_path, reason=f"shadow release {self.version} at start")
        except Exception as exc:  # a challenger that no longer loads is dropped; the hub starts
            slot.drop(f"shadow release {self.version} does not load at start: {exc}")

    def watch(self, scorer: Optional[StreamScorer]) -> None:
        """Report `scorer`'s pairs, and publish the status again whenever one is scored."""
        self.scorer = scorer
        if scorer is not None:
            scorer.listeners.append(self._scored)

    def _scored(self, outcome: object) -> None:
        """New pairs republish the status at most every `report_seconds` (the last ones
        of a burst go out with the housekeeping once that time has passed)."""
        if outcome.extras.get("shadow", {}).get("scored"):
            self._report_due = True
            self._report_if_due()

    def _report_if_due(self) -> None:
        if self._report_due and time.monotonic() - self._reported >= self.report_seconds:
            self._report_due, self._reported = False, time.monotonic()
            self.champion.request_status()

    def _housekeeping(self) -> None:
        super()._housekeeping()
        self._report_if_due()

    def start_beside(self, champion: HubUpdater) -> None:
        """Started by the champion's updater: statuses go out as its `shadow` part."""
        self.holder, self._publish = self.slot, lambda payload: champion.request_status()
        champion.parts["shadow"] = self.part
        self._thread.start()

    def part(self) -> dict:
        """The `shadow` part of the hub's status."""
        fields = self.status_fields()
        slot = self.holder
        fields["state"] = self._slot_state(fields["state"])
        fields["reason"] = slot.reason if slot is not None else None
        fields["model_sha256"] = fields["sha256"]
        if self.scorer is not None:
            scoring = self.scorer.shadow_report(with_losses=True)
            fields.update({key: value for key, value in scoring.items()
                           if key not in ("state", "reason", "model_sha256", "model_name")})
        return fields

    def _slot_state(self, updater_state: str) -> str:
        """Receiving or installing while a record is handled, else the slot's state."""
        if updater_state in ("receiving", "installing") or self.holder is None:
            return updater_state
        return self.holder.state

    def _slot_changed(self, state: str, reason: Optional[str]) -> None:
        """On the stream's thread (a failed forecast) or the installer's: under the lock."""
        with self._lock:
            if state == DROPPED and self.version is not None:
                self._forget_installed(reason)
            if state in (DROPPED, PROMOTED):
                self._status.update(since=now_text())
            if state == RUNNING:
                self._status.update(last_error=None)
        self.request_status()
        self.champion.request_status()

    def _forget_installed(self, reason: Optional[str]) -> None:
        """A dropped challenger stays dropped: no pointer to it, its record refused."""
        version = self.version
        record_path = self.release_dir / f"v{version}.release.json"
        try:
            digest = hashlib.sha256(record_path.read_bytes()).hexdigest()
        except OSError:
            digest = None
        (self.release_dir / CURRENT_NAME).unlink(missing_ok=True)
        error = {"version": version, "record_sha256": digest, "reason": "shadow-dropped",
                 "message": " ".join(str(reason).split()), "at": now_text()}
        if digest is not None:
            self._refused.add(digest, error)
            self.folder.keep_refusal(error)
        self._status["last_error"] = error
        self.version = self.model_path = None
        self.log({"event": "shadow_release_forgotten", **error})


def open_shadow(updater: HubUpdater, threads: int, loading: ModelLoading, report_seconds: float) -> ShadowUpdater:
    """The shadow's updater beside the champion's, its slot holding the installed challenger."""
    shadow = ShadowUpdater(updater, report_seconds=report_seconds)
    shadow.open_slot(ShadowSlot(threads, loading, log_event))
    updater.add_companion(shadow)
    return shadow
