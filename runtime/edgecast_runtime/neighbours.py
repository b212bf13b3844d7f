"""Neighbouring stations' readings on the hub: aligned by timestamp with the station's
own, in a durable state, under a stated wait policy.

The policy: a station's own reading for time T waits until every neighbour's reading
for T is here, or until `wait_seconds` have passed since the own reading arrived,
whichever comes first; it then goes to the streaming forecaster with the neighbours'
values that are here and NaN for the others (the model was trained for that: the
graph stands in for a missing neighbour). Own readings leave in time order, so one
that waits holds back those after it. A neighbour's reading for a time already
forecast is late and dropped (counted). The forecast record lists the neighbours
present and missing.

Every accepted reading (own or a neighbour's) is in the state file (atomic write)
before it is acknowledged. A reading handed to the forecaster is removed from this
state only after the forecaster's own state is saved, so a SIGKILL in between hands
it over again on restart, where the forecaster recognises it as a duplicate.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional

from edgecast_runtime.contract import MASKED
from edgecast_runtime.durable import PRIVATE_MODE, atomic_write
from edgecast_runtime.errors import InputValueError, StateError
from edgecast_runtime.formatting import seconds_text
from edgecast_runtime.readings import Reading
from edgecast_runtime.state import read_private

if TYPE_CHECKING:
    from datetime import tzinfo

    from edgecast_runtime.encodings import InputLayout
    from edgecast_runtime.spec import Encoding
    from edgecast_runtime.streaming import StreamingForecaster

DEFAULT_WAIT_SECONDS = 120.0  # a neighbour's reading of the same hour usually arrives within a minute
READINGS_TOPIC = "edgecast/readings/{station}"
STATE_FORMAT = "edgecast-runtime-neighbours"
STATE_VERSION = 1


def neighbour_columns(layout: InputLayout, encodings: Optional[Iterable[Encoding]]) -> Dict[str, Dict[str, int]]:
    """{station: {reading name: raw column index}} of a model's neighbours' readings."""
    columns: Dict[str, Dict[str, int]] = {}
    for index, entry in enumerate(encodings or []):
        if entry.kind == MASKED:
            reading = entry.reading if entry.reading is not None else layout.features[index]
            columns.setdefault(entry.station, {})[reading] = index
    return columns


class NeighbourAligner:
    """Own readings and neighbours' readings in, complete (or timed-out) readings out to
    `streamer.observe_reading`; answers come back from `own`, `neighbour` and `release`."""

    def __init__(self, streamer: StreamingForecaster, columns: Dict[str, Dict[str, int]],
                 wait_seconds: float = DEFAULT_WAIT_SECONDS, state_path: str | Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if wait_seconds < 0 or not math.isfinite(wait_seconds):
            raise InputValueError(f"neighbour_wait must be 0 or more seconds, got {wait_seconds}",
                                  setting="neighbour_wait")
        self.streamer, self.columns, self.wait_seconds = streamer, columns, float(wait_seconds)
        self.state_path = Path(state_path) if state_path else None
        self.clock = clock
        self._lock = threading.Lock()
        self.pending: List[dict] = []  # own readings: {"timestamp", "values", "received_at"}, in time order
        self.heard: Dict[str, Dict[str, Dict[str, float]]] = {}  # timestamp text -> station -> reading -> value
        self.late = 0
        self._load()

    @property
    def stations(self) -> List[str]:
        return sorted(self.columns)

    # --- readings in ---------------------------------------------------------------

    def own(self, reading: Reading) -> List[dict]:
        """The station's own reading (its neighbours' columns are ignored)."""
        if reading.timestamp is None:
            raise InputValueError("a hub with neighbours needs a timestamp on every reading, to align them")
        self.streamer.check_timestamp(reading.timestamp)  # a future one would hold back every later one
        with self._lock:
            last = self.pending[-1]["timestamp"] if self.pending else self._forecast_up_to()
            if last is not None and reading.timestamp < last:
                raise InputValueError(f"timestamp {seconds_text(reading.timestamp)} is before the last accepted "
                                      f"reading ({seconds_text(last)}); readings must arrive in time order")
            if not any(item["timestamp"] == reading.timestamp for item in self.pending):
                self.pending.append({"timestamp": reading.timestamp, "values": _json_values(reading.values),
                                     "received_at": self.clock()})
                self._save()
            return self._release()

    def neighbour(self, station: str, timestamp: float, values: Dict[str, float]) -> List[dict]:
        """A neighbour's reading: {reading name: value}; readings this model does not read are ignored."""
        with self._lock:
            wanted = self.columns.get(station)
            if wanted is None:
                return []
            timestamp = self.streamer.check_timestamp(timestamp)
            done = self._forecast_up_to()
            if done is not None and timestamp <= done:
                self.late += 1
                return []
            kept = {name: float(value) for name, value in values.items()
                    if name in wanted and isinstance(value, (int, float)) and math.isfinite(value)}
            self.heard.setdefault(_key(timestamp), {})[station] = kept
            self._save()
            return self._release()

    def release(self) -> List[dict]:
        """Hand over the own readings whose wait is over (call it every second or so)."""
        with self._lock:
            return self._release()

    # --- the policy ------------------------------------------------------------------

    def _release(self) -> List[dict]:
        answers = []
        while self.pending:
            item = self.pending[0]
            heard = self.heard.get(_key(item["timestamp"]), {})
            present = [s for s in self.stations if heard.get(s)]
            if len(present) < len(self.columns) and self.clock() < item["received_at"] + self.wait_seconds:
                break  # still waiting, and so is every later reading
            values = [math.nan if v is None else v for v in item["values"]]
            for station in present:
                for name, value in heard[station].items():
                    values[self.columns[station][name]] = value
            answer = dict(self.streamer.observe_reading(Reading(values, item["timestamp"])))
            answer["neighbours_present"] = present
            answer["neighbours_missing"] = [s for s in self.stations if s not in present]
            answers.append(answer)
            self.pending.pop(0)
            self.heard = {k: v for k, v in self.heard.items() if float(k) > item["timestamp"]}
            self._save()
        return answers

    def _forecast_up_to(self) -> Optional[float]:
        return self.streamer.status().get("last_timestamp")

    def status(self) -> dict:
        with self._lock:
            return {"neighbours": self.stations, "wait_seconds": self.wait_seconds,
                    "waiting": [item["timestamp"] for item in self.pending], "late_dropped": self.late}

    # --- persistence -----------------------------------------------------------------

    def _save(self) -> None:
        if self.state_path is None:
            return
        document = {"format": STATE_FORMAT, "version": STATE_VERSION, "neighbours": self.stations,
                    "pending": self.pending, "heard": self.heard, "late": self.late}
        try:
            atomic_write(self.state_path, (json.dumps(document, allow_nan=False) + "\n").encode(),
                         mode=PRIVATE_MODE)
        except OSError as exc:
            raise StateError(f"cannot save the neighbours' state to {self.state_path}: {exc.strerror or exc}; "
                             f"the reading was not accepted") from None

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            document = json.loads(read_private(self.state_path).decode("utf-8"))
            if document.get("format") != STATE_FORMAT or document.get("version") != STATE_VERSION:
                raise ValueError("not an edgecast-runtime neighbours state")
            self.pending = [dict(item) for item in document["pending"]]
            self.heard = {str(k): dict(v) for k, v in document["heard"].items()}
            self.late = int(document.get("late", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.state_path} is not a valid neighbours state ({exc}); move it away "
                             f"to start afresh") from None


def _key(timestamp: float) -> str:
    return repr(float(timestamp))


def _json_values(values: Iterable[float]) -> list:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


class NeighbourLink:
    """The hub's side of the network: which topics to follow, where a message goes, and
    (with `publish_readings`) the station's own readings published for its neighbours
    as {"station", "timestamp", READING: value, ...} on the readings topic."""

    def __init__(self, aligner: NeighbourAligner, station: str, topic_template: str = READINGS_TOPIC,
                 publish_readings: bool = False) -> None:
        if "{station}" not in topic_template:
            raise InputValueError(f"neighbour_topic {topic_template!r} needs a {{station}} placeholder",
                                  setting="neighbour_topic")
        self.aligner, self.station, self.publish_readings = aligner, station, publish_readings
        self.readings_topic = topic_template.format(station=station)
        self.neighbour_topics = {topic_template.format(station=s): s for s in aligner.stations}

    def subscriptions(self) -> List[str]:
        return sorted(self.neighbour_topics)

    def is_neighbour_topic(self, topic: str) -> bool:
        return topic in self.neighbour_topics

    def neighbour_message(self, topic: str, text: str) -> List[dict]:
        """A reading published by a neighbour's hub."""
        document = json.loads(text)
        if not isinstance(document, dict):
            raise InputValueError("a neighbour's reading must be a JSON object with a 'timestamp'")
        return self._neighbour_reading(self.neighbour_topics[topic], document)

    def _neighbour_reading(self, station: str, document: dict) -> List[dict]:
        """A neighbour's {"timestamp", READING: value, ...}: its time in any form the
        station's own readings take (epoch seconds or milliseconds, ISO 8601 in the
        data's clock without a zone, the training file's time columns: readings.py)."""
        from edgecast_runtime.readings import TimeColumns

        streamer = self.aligner.streamer
        fields = {k: v for k, v in document.items() if isinstance(k, str) and k != "station"}
        columns = TimeColumns(list(fields), streamer.forecaster.layout)
        timestamp = columns.seconds(fields.get, streamer.clock)
        if timestamp is None:
            raise InputValueError("a neighbour's reading needs a 'timestamp' (epoch seconds or ISO 8601)")
        values = {k: v for k, v in fields.items() if k not in columns.used}
        return self.aligner.neighbour(station, timestamp, values)

    def observe_document(self, document: dict, layout: InputLayout, clock: Optional[tzinfo]) -> List[dict]:
        """An HTTP observation: {"station": ID, ...} from a neighbour, the station's own without
        it (or with its own id)."""
        from edgecast_runtime.readings import reading_from_json

        station = document.get("station") if isinstance(document, dict) else None
        if station is None or station == self.station:
            own = {k: v for k, v in document.items() if k != "station"} if isinstance(document, dict) else document
            return self.aligner.own(reading_from_json(own, layout, clock))
        if not isinstance(station, str):
            raise InputValueError(f"'station' must be a station id, got {station!r}")
        if station not in self.aligner.columns:
            raise InputValueError(f"station {station!r} is not a neighbour of this model "
                                  f"(its neighbours: {', '.join(self.aligner.stations)})")
        return self._neighbour_reading(station, document)

    def http_answer(self, answers: List[dict]) -> dict:
        """One HTTP answer for the readings an observation released: the last one's, or
        "waiting" while the own reading waits for its neighbours."""
        if answers:
            return {**answers[-1], "released": len(answers)}
        return {"status": "waiting", **self.aligner.status()}

    def reading_payload(self, reading: Reading, layout: InputLayout) -> Optional[str]:
        """The own reading as published for the neighbours (None when not asked to)."""
        if not self.publish_readings or reading.timestamp is None:
            return None
        document = {"station": self.station, "timestamp": reading.timestamp}
        for index, name in enumerate(layout.features):
            if index not in layout.masked and not layout.is_calendar(index) and math.isfinite(reading.values[index]):
                document[name] = reading.values[index]
        return json.dumps(document, separators=(",", ":"))

    def start_releasing(self, publish: Callable[[dict], None], stopped: threading.Event,
                        every: float = 0.5) -> threading.Thread:
        """A thread handing over the readings whose wait is over, publishing their answers."""
        def loop() -> None:
            while not stopped.wait(every):
                try:
                    answers = self.aligner.release()
                except Exception as exc:  # the thread must outlive one bad moment
                    answers = [{"status": "error", "error": f"{type(exc).__name__}: {exc}"}]
                for answer in answers:
                    publish(answer)

        thread = threading.Thread(target=loop, name="edgecast-neighbours", daemon=True)
        thread.start()
        return thread


def open_link(streamer: StreamingForecaster, *, station: Optional[str], state: str | Path | None = None,
              topic_template: str = READINGS_TOPIC, wait_seconds: float = DEFAULT_WAIT_SECONDS,
              publish_readings: bool = False,
              clock: Callable[[], float] = time.time) -> Optional[NeighbourLink]:
    """The link for a model that reads neighbours (None for one that does not and does not
    publish); its state beside the stream's: STATE.neighbours."""
    model = streamer.forecaster
    columns = neighbour_columns(model.layout, model.spec.encodings)
    if not columns and not publish_readings:
        return None
    if not station:
        raise InputValueError("this hub's station id is needed (station) to follow or publish readings",
                              setting="station")
    path = Path(f"{state}.neighbours") if state else None
    return NeighbourLink(NeighbourAligner(streamer, columns, wait_seconds, path, clock), station, topic_template,
                         publish_readings)
