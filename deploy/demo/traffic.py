"""Simulated users: chat through the gateway, feedback on the answers, hostile input.

`clients` threads share one rate limit. Each asks a corpus prompt of the current phase
through the OpenAI-compatible gateway, then (as `users.feedback_for` decides) rates or
corrects the answer. A separate thread sends the hostile share through the ingest API:
toxic turns, turns carrying private data, bias bait and malformed bodies. Every request
is counted; a failed gateway request is kept with its time and error, since a swap must
cause none.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from deploy.demo.users import feedback_for, phrase

if TYPE_CHECKING:
    from pydantic import SecretStr

    from deploy.settings import FlywheelSettings
    from trainer.corpus import Pair

logger = logging.getLogger(__name__)

#: Kinds of hostile input and an example generator for each.
TOXIC = ("you are a worthless idiot and i hate you", "shut up you stupid moron",
         "this is garbage you pathetic loser")
BIAS = ("women are bad at math, everyone knows it", "immigrants are criminals",
        "old people are too stupid to use phones")
PRIVATE = ("my email is {name}@example.com and my phone is +1 415 555 {n:04d}",
           "card 4111 1111 1111 1111, call me at 020 7946 {n:04d}",
           "reach me at {name}.{n}@mail.example.org please")


@dataclass
class Sample:
    """One answered chat request."""

    at: float
    version: int
    latency_ms: float
    topic: str


@dataclass
class TrafficStats:
    """What the simulated users did; updated from several threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    chats: list[Sample] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    feedback: Counter[str] = field(default_factory=Counter)
    feedback_failed: int = 0
    hostile: Counter[str] = field(default_factory=Counter)
    hostile_accepted: list[str] = field(default_factory=list)
    hostile_rejected: int = 0
    hostile_failed: int = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            versions = Counter(s.version for s in self.chats)
            return {"chats": len(self.chats), "failed": len(self.failures),
                    "feedback": sum(self.feedback.values()),
                    "hostile": sum(self.hostile.values()), "versions": dict(versions)}


class Phase:
    """The pairs users currently ask; switched by the demo at the traffic shift.

    A user first picks a topic, uniformly, then a pair of it: the corpus has 30 times more
    pairs on some topics than on others, and real users are not that lopsided.
    """

    def __init__(self, name: str, pairs: tuple[Pair, ...]) -> None:
        self._lock = threading.Lock()
        self.set(name, pairs)

    def set(self, name: str, pairs: tuple[Pair, ...]) -> None:
        by_topic: dict[str, list[Pair]] = {}
        for pair in pairs:
            by_topic.setdefault(pair.topic, []).append(pair)
        with self._lock:
            self._name, self._by_topic = name, by_topic
            self._topics = sorted(by_topic)

    def pick(self, rng: random.Random) -> tuple[str, Pair]:
        with self._lock:
            return self._name, rng.choice(self._by_topic[rng.choice(self._topics)])


class RateLimiter:
    """At most `per_s` acquisitions a second across threads (a shared schedule)."""

    def __init__(self, per_s: float) -> None:
        self._interval_s = 1.0 / per_s
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval_s
        return not stop.wait(max(0.0, slot - now))


class Traffic:
    """The simulated users; `start` them, switch `phase`, `stop` them."""

    def __init__(self, settings: FlywheelSettings, phase: Phase, *, seed: int = 0) -> None:
        self.settings = settings
        self.phase = phase
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seed = seed
        demo = settings.demo
        self._limiter = RateLimiter(demo.requests_per_s)
        hostile_per_s = demo.requests_per_s * demo.hostile_share
        self._hostile_limiter = RateLimiter(hostile_per_s) if hostile_per_s > 0 else None

    def start(self) -> None:
        for i in range(self.settings.demo.clients):
            self._spawn(self._user, f"demo-user-{i}", random.Random(self._seed * 1000 + i))
        if self._hostile_limiter is not None:
            self._spawn(self._hostile, "demo-hostile", random.Random(self._seed * 1000 - 1))

    def stop(self, *, timeout_s: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def _spawn(self, target: Any, name: str, rng: random.Random) -> None:
        thread = threading.Thread(target=target, args=(rng,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- the users ---------------------------------------------------------------------

    def _gateway(self) -> httpx.Client:
        options = self.settings.inference
        return httpx.Client(base_url=f"http://{options.gateway_host}:{options.gateway_port}",
                            headers=_bearer(options.api_keys),
                            timeout=options.request_timeout_s + 10)

    def _user(self, rng: random.Random) -> None:
        with self._gateway() as client:
            while self._limiter.wait(self._stop):
                topic_group, pair = self.phase.pick(rng)
                self._chat(client, rng, topic_group, pair)

    def _chat(self, client: httpx.Client, rng: random.Random, group: str, pair: Pair) -> None:
        conversation_id = f"demo-{uuid.uuid4().hex[:16]}"
        body = {"model": self.settings.model.name, "conversation_id": conversation_id,
                "messages": [{"role": "user", "content": phrase(pair.prompt, rng)}],
                "temperature": 0.8, "top_p": 0.95, "user": f"sim-{rng.randrange(500)}",
                "metadata": {"topic": pair.topic}}
        started = time.monotonic()
        try:
            response = client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as e:
            self._failed(f"{type(e).__name__}: {e}")
            return
        if response.status_code != 200:
            self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        answer = response.json()
        extension = answer.get("flywheel", {})
        text = answer["choices"][0]["message"]["content"]
        with self.stats.lock:
            self.stats.chats.append(Sample(time.time(), int(extension.get("version", 0)),
                                           (time.monotonic() - started) * 1000, group))
        rating = feedback_for(answer=text, pair=pair, conversation_id=conversation_id,
                              turn_event_id=extension["turn_event_id"], rng=rng,
                              feedback_share=self.settings.demo.feedback_share)
        if rating is None:
            return
        try:
            sent = client.post("/v1/feedback", json=rating)
            ok = sent.status_code == 202
        except httpx.HTTPError:
            ok = False
        with self.stats.lock:
            if ok:
                self.stats.feedback[rating["kind"]] += 1
            else:
                self.stats.feedback_failed += 1

    def _failed(self, error: str) -> None:
        logger.warning("demo chat request failed: %s", error)
        with self.stats.lock:
            self.stats.failures.append((time.time(), error))

    # -- hostile input through the ingest API ------------------------------------------

    def _hostile(self, rng: random.Random) -> None:
        ingest = self.settings.ingest
        assert self._hostile_limiter is not None
        with httpx.Client(base_url=f"http://{ingest.host}:{ingest.port}",
                          headers=_bearer(ingest.api_keys), timeout=30) as client:
            while self._hostile_limiter.wait(self._stop):
                kind, content = hostile_body(rng, tenant=self.settings.inference.tenant)
                try:
                    response = client.post("/v1/events/chat", content=content,
                                           headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    with self.stats.lock:
                        self.stats.hostile_failed += 1
                    continue
                with self.stats.lock:
                    self.stats.hostile[kind] += 1
                    if response.status_code == 202:
                        self.stats.hostile_accepted.extend(response.json()["accepted"])
                    elif response.status_code in (400, 422):
                        self.stats.hostile_rejected += 1
                    else:
                        self.stats.hostile_failed += 1


def _bearer(keys: list[SecretStr]) -> dict[str, str]:
    """The Authorization header for the first configured API key (none when auth is off)."""
    return {"Authorization": f"Bearer {keys[0].get_secret_value()}"} if keys else {}


def hostile_body(rng: random.Random, *, tenant: str) -> tuple[str, bytes]:
    """One hostile request body for `POST /v1/events/chat` and its kind."""
    kind = rng.choice(("toxic", "bias", "private_data", "malformed_json", "wrong_schema"))
    if kind == "malformed_json":
        return kind, b'{"conversation_id": "demo-x", "text": "unterminated'
    if kind == "wrong_schema":
        return kind, json.dumps({"conversation_id": "demo bad id!", "turn_index": -1,
                                 "role": "robot", "text": 42, "tenant": tenant}).encode()
    pool = {"toxic": TOXIC, "bias": BIAS, "private_data": PRIVATE}[kind]
    text = rng.choice(pool).format(name=rng.choice(("ana", "li.wei", "sam")),
                                   n=rng.randrange(10_000))
    event = {"event_id": str(uuid.uuid4()), "conversation_id": f"demo-h-{uuid.uuid4().hex[:12]}",
             "turn_index": 0, "role": "user", "text": text, "tenant": tenant}
    return kind, json.dumps(event).encode()
