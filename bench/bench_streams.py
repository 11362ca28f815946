"""Stream worker end-to-end: Kafka in -> rows queryable in ClickHouse, against a baseline.

    .venv/bin/python -m bench.bench_streams [--events 20000] [--rate 2000] [--runs 1]
        [--processes 1]

Runs its own stack (ports offset by 30000, see bench.bench_stack). Figures:
- throughput of one worker process vs a plain confluent-kafka consumer inserting the same
  events into the same ClickHouse with no processing (the baseline), and the ratio;
- p50/p99 produce -> inserted latency at a fixed rate (`ingested_at - ts` of chat_turns);
- throughput of two worker processes vs one;
- a floor between the two: the baseline plus what any worker must do (decode each record
  with its data contract, land it in tables shaped as the curated ones), no filters.
`--processes` is `streams.workers_processes` (helper processes per worker for the
stateless stages; 0 = none); the one-worker figure is also taken with 0 for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.bench_stack import bench_settings
from bench.report import median, write_section
from deploy.clickhouse.client import get_client
from deploy.local.stack import build_stack
from deploy.settings import FlywheelSettings
from deploy.warehouse import migrate
from schemas.chat import ChatEvent, Role
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent, FeedbackKind
from streams.decoding import decode_chat, decode_feedback
from streams.rows import CHAT_TURN_COLUMNS, FEEDBACK_COLUMNS, Record, chat_turn_row, feedback_row
from tests.streams.worker_harness import Topics, create_topics, start_worker, stop_worker

WORDS = ("the account export report customer billing update android password invoice "
         "model answer quickly please error server timeout refund shipping order plan "
         "support feature python data table chart weekly meeting summary").split()


def events(count: int, *, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value): turns of 20-400 words, 5% toxic/PII bait, 10% feedback."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes, bytes]] = []
    now = datetime.now(UTC)
    while len(out) < count:
        conv = f"c{len(out)}-{seed}"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 400)))
        bait = rng.random()
        if bait < 0.025:
            text = "you stupid fucking idiot " + text
        elif bait < 0.05:
            text += f" mail me at u{len(out)}@example.com or +1 415 555 {rng.randint(1000, 9999)}"
        turn = ChatEvent(conversation_id=conv, turn_index=1, role=Role.ASSISTANT, text=text,
                         model="m", model_version="v1", tenant=f"t{rng.randint(0, 9)}",
                         timestamp=now)
        out.append(("chat", conv.encode(), encode(turn, producer="bench")))
        if rng.random() < 0.1:
            fb = FeedbackEvent(conversation_id=conv, turn_event_id=turn.event_id,
                               kind=FeedbackKind.THUMBS_UP, tenant=turn.tenant, timestamp=now)
            out.append(("fb", conv.encode(), encode(fb, producer="bench")))
    return out[:count]


def produce(settings: FlywheelSettings, topics: Topics, batch: list[tuple[str, bytes, bytes]],
            *, rate: float | None = None) -> None:
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 5})
    started = time.perf_counter()
    for i, (kind, key, value) in enumerate(batch):
        if rate is not None:
            # Re-stamp each event as it is sent so `ts` is the produce time.
            payload = json.loads(value)
            payload["payload"]["timestamp"] = datetime.now(UTC).isoformat()
            value = json.dumps(payload).encode()
            while time.perf_counter() - started < i / rate:
                time.sleep(0.0005)
        producer.produce(topics.chat if kind == "chat" else topics.feedback, value, key=key)
        producer.poll(0)
    producer.flush(60)


def landed_rows(client: Any, db: str, topics: Topics) -> int:
    """Records whose row is queryable: curated turns and feedback, quarantine, errors.

    Not the ledger: each flush writes it before the other tables, so it runs ahead.
    """
    sources = f"('{topics.chat}', '{topics.feedback}')"
    counts = " + ".join(f"(SELECT count() FROM {db}.{table} WHERE source_topic IN {sources})"
                        for table in ("chat_turns", "feedback", "quarantine", "stream_errors"))
    return int(client.query(f"SELECT {counts}").result_rows[0][0])


def run_workers(settings: FlywheelSettings, client: Any, *, workers: int, total: int,
                batch: list[tuple[str, bytes, bytes]], log: Path) -> float:
    base = f"b_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base, partitions=6)
    produce(settings, topics, batch)
    procs = [start_worker(settings, topics, group=base, log=log) for _ in range(workers)]
    db = settings.clickhouse.database
    started = None
    try:
        while landed_rows(client, db, topics) < total:
            if started is None and landed_rows(client, db, topics) > 0:
                started = time.perf_counter()  # exclude process start-up (imports, join)
            time.sleep(0.05)
    finally:
        for p in procs:
            stop_worker(p)
    return total / (time.perf_counter() - (started or time.perf_counter()))


def baseline(settings: FlywheelSettings, client: Any, *, batch: list[tuple[str, bytes, bytes]]
             ) -> float:
    base = f"b_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base, partitions=6)
    produce(settings, topics, batch)
    db = settings.clickhouse.database
    client.command(f"CREATE TABLE IF NOT EXISTS {db}.bench_baseline (topic String, "
                   "part UInt32, off UInt64, value String) ENGINE = MergeTree ORDER BY off")
    consumer = Consumer({**settings.kafka.client_config(), "group.id": base,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topics.chat, topics.feedback])
    done, started = 0, None
    while done < len(batch):
        messages = [m for m in consumer.consume(2000, timeout=0.5) if m.error() is None]
        if not messages:
            continue
        started = started or time.perf_counter()
        client.insert(f"{db}.bench_baseline", [[m.topic(), m.partition(), m.offset(),
                                                (m.value() or b"").decode()] for m in messages],
                      column_names=["topic", "part", "off", "value"])
        consumer.commit(asynchronous=False)
        done += len(messages)
    consumer.close()
    return len(batch) / (time.perf_counter() - (started or time.perf_counter()))


def floor(settings: FlywheelSettings, client: Any, *, batch: list[tuple[str, bytes, bytes]]
          ) -> float:
    """The baseline plus what any worker must do: decode each record with its contract and
    land it as a row of the curated tables (same columns and engines), no filter at all."""
    base = f"b_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base, partitions=6)
    produce(settings, topics, batch)
    db = settings.clickhouse.database
    for table in ("chat_turns", "feedback"):
        client.command(f"CREATE TABLE IF NOT EXISTS {db}.bench_floor_{table} AS {db}.{table}")
    consumer = Consumer({**settings.kafka.client_config(), "group.id": base,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topics.chat, topics.feedback])
    done, started = 0, None
    while done < len(batch):
        messages = [m for m in consumer.consume(2000, timeout=0.5) if m.error() is None]
        if not messages:
            continue
        started = started or time.perf_counter()
        turns, feedback = [], []
        for m in messages:
            record = Record.of(m)
            if record.topic == topics.chat:
                event = decode_chat(record.value)
                turns.append(chat_turn_row(event, record, text=event.text, language="en",
                                           topic="", toxicity=0.0, redactions={}))
            else:
                feedback.append(feedback_row(decode_feedback(record.value), record,
                                             correction=None, comment=None))
        client.insert(f"{db}.bench_floor_chat_turns", turns, column_names=CHAT_TURN_COLUMNS)
        if feedback:
            client.insert(f"{db}.bench_floor_feedback", feedback,
                          column_names=FEEDBACK_COLUMNS)
        consumer.commit(asynchronous=False)
        done += len(messages)
    consumer.close()
    return len(batch) / (time.perf_counter() - (started or time.perf_counter()))


def latency(settings: FlywheelSettings, client: Any, *, rate: float, seconds: float,
            log: Path) -> tuple[float, float]:
    base = f"b_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base, partitions=6)
    worker = start_worker(settings, topics, group=base, log=log)
    batch = events(int(rate * seconds), seed=99)
    db = settings.clickhouse.database
    try:
        time.sleep(8)  # let the worker join before the clock starts
        produce(settings, topics, batch, rate=rate)
        while landed_rows(client, db, topics) < len(batch):
            time.sleep(0.2)
    finally:
        stop_worker(worker)
    p50, p99 = client.query(
        f"SELECT quantile(0.5)(d), quantile(0.99)(d) FROM (SELECT "
        f"dateDiff('millisecond', ts, ingested_at) AS d FROM {db}.chat_turns FINAL "
        f"WHERE source_topic = '{topics.chat}')").result_rows[0]
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-s", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1,
                        help="streams.workers_processes of each worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        defaults = bench_settings(Path(tmp))
        settings = defaults.model_copy(update={"streams": defaults.streams.model_copy(
            update={"cap_min_records": 10**9, "workers_processes": args.processes})})
        alone = settings.model_copy(update={"streams": settings.streams.model_copy(
            update={"workers_processes": 0})})
        stack = build_stack(settings)
        try:
            stack.up(["kafka", "clickhouse"])
            client = get_client(settings)
            migrate(client, settings)
            log = Path(tmp) / "workers.log"
            batch = events(args.events, seed=1)
            one, two, base, bare, single = [], [], [], [], []
            for _ in range(args.runs):
                base.append(baseline(settings, client, batch=batch))
                bare.append(floor(settings, client, batch=batch))
                single.append(run_workers(alone, client, workers=1, total=len(batch),
                                          batch=batch, log=log))
                one.append(run_workers(settings, client, workers=1, total=len(batch),
                                       batch=batch, log=log))
                two.append(run_workers(settings, client, workers=2, total=len(batch),
                                       batch=batch, log=log))
            p50, p99 = latency(settings, client, rate=args.rate, seconds=args.latency_s,
                               log=log)
        finally:
            stack.down()
    body = f"""Command: `.venv/bin/python -m bench.bench_streams --events {args.events} --rate {args.rate:.0f} --runs {args.runs} --processes {args.processes}`

Events: assistant turns of 20-400 words, 5% toxic or private-data bait, 10% feedback;
topics of 6 partitions; one worker = one `python -m streams.worker` process with
`streams.workers_processes={args.processes}` helper processes for the stateless stages
(the "no helpers" row: 0). Throughput is counted from the first landed row to the last
(process start-up excluded).

| figure (median of {args.runs}) | value |
|---|---|
| baseline: plain confluent-kafka consumer -> ClickHouse insert | {median(base):,.0f} events/s |
| floor: the baseline + contract decoding + rows of the curated tables, no filters | {median(bare):,.0f} events/s (ratio {median(bare) / median(base):.2f}) |
| one stream worker, no helper processes | {median(single):,.0f} events/s (ratio {median(single) / median(base):.2f}) |
| one stream worker, end to end | {median(one):,.0f} events/s |
| ratio worker / baseline | {median(one) / median(base):.2f} |
| two stream workers | {median(two):,.0f} events/s ({median(two) / median(one):.2f} x one) |
| produce -> inserted latency at {args.rate:.0f} events/s, p50 | {p50:,.0f} ms |
| produce -> inserted latency at {args.rate:.0f} events/s, p99 | {p99:,.0f} ms |
"""
    write_section("Stream worker (issue 5)", body)
    print(body)


if __name__ == "__main__":
    main()
