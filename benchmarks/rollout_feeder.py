"""The operator's side of the rollout benchmark, on one MQTT session (the operator's
listener): readings to every hub at a steady rate, every answer checked, the hubs'
statuses and release records followed, and the broker's $SYS counters kept.

A hub answers its readings in order (QoS 1 on one topic, one network thread), so the
k-th answer on `edgecast/hub/ID/forecasts` is the answer to the k-th reading sent to
`edgecast/readings/ID`: its latency is taken against that reading's send time. A reading
fails when its answer is an error, or comes later than the deadline, or never comes."""
from __future__ import annotations

import collections
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgecast.release.broker import BrokerSettings, OperatorSession

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessage

ANSWERS = "edgecast/hub/+/forecasts"
SYS_TOPICS = ("$SYS/broker/bytes/#", "$SYS/broker/messages/#", "$SYS/broker/publish/bytes/#",
              "$SYS/broker/clients/connected", "$SYS/broker/retained messages/count", "$SYS/broker/heap/#",
              "$SYS/broker/uptime")
OK = ("forecast", "filling")


@dataclass
class Answers:
    """Per hub: what was sent and not yet answered, and what came back."""

    pending: collections.deque = field(default_factory=collections.deque)  # send times (monotonic)
    answered: int = 0
    by_model: collections.Counter = field(default_factory=collections.Counter)  # model sha256 -> answers
    last_model: str | None = None


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Feeder:
    """Readings to `hubs` at `rate` per hub per second, spread evenly over each second."""

    def __init__(self, settings: BrokerSettings, hubs: list[str], rate: float, deadline: float):
        self.hubs, self.rate, self.deadline = hubs, rate, deadline
        self.session = OperatorSession(settings, client_id="bench-feeder")
        self.answers = {hub: Answers() for hub in hubs}
        self.failures: list[dict] = []  # {"hub", "at", "why"}
        self.latencies: list[tuple[float, float]] = []  # (answered at, seconds)
        self.sent = 0
        self.sys: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Feeder:
        self.session.__enter__()
        client = self.session.client
        client.message_callback_add(ANSWERS, self._on_answer)
        client.message_callback_add("$SYS/#", self._on_sys)
        client.subscribe([(ANSWERS, 1), *[(topic, 0) for topic in SYS_TOPICS]])
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.session.__exit__()

    # --- sending -------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._send, daemon=True, name="feeder")
        self.thread.start()

    def _send(self) -> None:
        gap = 1.0 / (self.rate * len(self.hubs))
        step, due = 0, time.monotonic()
        while not self.stopped.is_set():
            hub = self.hubs[step % len(self.hubs)]
            payload = json.dumps({"values": [10.0 + (step // len(self.hubs)) % 7]})
            with self.lock:
                self.answers[hub].pending.append(time.monotonic())
                self.sent += 1
            self.session.client.publish(f"edgecast/readings/{hub}", payload, qos=1)
            step += 1
            due += gap
            self.stopped.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(10)

    def drain(self, timeout: float) -> None:
        """Wait until every reading sent is answered, or `timeout`."""
        end = time.monotonic() + timeout
        while self.outstanding() and time.monotonic() < end:
            time.sleep(0.1)

    def outstanding(self) -> int:
        with self.lock:
            return sum(len(answers.pending) for answers in self.answers.values())

    # --- receiving -----------------------------------------------------------------------

    def _on_answer(self, client: object, userdata: object, message: MQTTMessage) -> None:
        now = time.monotonic()
        hub = message.topic.split("/")[2]
        try:
            answer = json.loads(message.payload)
        except ValueError:
            answer = {"status": "not JSON"}
        with self.lock:
            answers = self.answers.get(hub)
            if answers is None:
                return
            if not answers.pending:
                self.failures.append({"hub": hub, "at": now, "why": f"an answer to no reading: {answer}"})
                return
            latency = now - answers.pending.popleft()
            answers.answered += 1
            self.latencies.append((now, latency))
            model = answer.get("model_sha256")
            answers.by_model[model] += 1
            answers.last_model = model
            if answer.get("status") not in OK:
                self.failures.append({"hub": hub, "at": now, "why": f"error answer: {answer.get('error')}"})
            elif latency > self.deadline:
                self.failures.append({"hub": hub, "at": now, "why": f"answered after {latency:.1f} s"})

    def _on_sys(self, client: object, userdata: object, message: MQTTMessage) -> None:
        try:
            self.sys[message.topic.removeprefix("$SYS/broker/")] = float(message.payload.split()[0])
        except (ValueError, IndexError):
            pass

    # --- figures -------------------------------------------------------------------------

    def unanswered(self) -> list[dict]:
        """Readings still waiting past the deadline (call after `drain`)."""
        now = time.monotonic()
        with self.lock:
            return [{"hub": hub, "at": sent, "why": "no answer"} for hub, answers in self.answers.items()
                    for sent in answers.pending if now - sent > self.deadline]

    def sys_snapshot(self, wait: float = 2.5) -> dict:
        """The $SYS counters, after `wait` seconds for a fresh publication (sys_interval 1)."""
        time.sleep(wait)
        return dict(self.sys)

    def latency_figures(self, since: float = 0.0, until: float = float("inf")) -> dict:
        with self.lock:
            values = [seconds for at, seconds in self.latencies if since <= at <= until]
        return {"answers": len(values),
                "median_ms": round(1000 * statistics.median(values), 1) if values else None,
                "p99_ms": round(1000 * percentile(values, 0.99), 1) if values else None,
                "max_ms": round(1000 * max(values), 1) if values else None}

    def answers_by_model(self, labels: dict[str, str]) -> dict:
        """Answers per model label (`labels`: sha256 -> "v1"/"v2"), summed over the hubs."""
        total = collections.Counter()
        with self.lock:
            for answers in self.answers.values():
                for sha, count in answers.by_model.items():
                    total[labels.get(sha, sha or "none")] += count
        return dict(total)

    def last_models(self) -> dict[str, str | None]:
        with self.lock:
            return {hub: answers.last_model for hub, answers in self.answers.items()}
