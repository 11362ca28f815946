"""Producer SDK and HTTP ingest throughput against the real broker.

    .venv/bin/python -m bench.bench_ingest [--events 50000] [--rounds 3] [--requests 2000]
        [--port-offset 30000]

1. SDK: `ChatEventProducer.send` for N events (validation already done, serialisation and
   delivery included) against a plain confluent-kafka producer with the same settings
   sending the same events, (a) serialised beforehand and (b) serialising each with
   `schemas.encode` in its loop. Each run covers the same life cycle: create the client,
   queue every event, wait for every acknowledgement, release the client. After one
   warm-up run of each, rounds rotate the order; medians are compared. Wall time gives
   events/s; the process's CPU time (all its threads) per event is reported too, as it
   moves less with other load on the machine. "Warm" runs time the same events on a
   client that already has its idempotent producer id, so the send loop sets the pace
   instead of the id wait.
2. HTTP ingest: `flywheel ingest serve` in its own process; 4 concurrent clients post one
   event per request; requests/s and latency percentiles (each 202 means Kafka acked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from bench.bench_stack import PORT_OFFSET, bench_settings
from bench.report import median, write_section
from deploy.local.stack import build_stack
from deploy.settings import SETTINGS_ENV, FlywheelSettings, settings_to_json
from schemas import ChatEvent, Role, encode
from streams.producer import ChatEventProducer
from streams.topics import CHAT_EVENTS, ensure_topics


def make_events(n: int) -> list[ChatEvent]:
    return [
        ChatEvent(conversation_id=f"conv-{i % 997}", turn_index=i // 997, role=Role.USER,
                  text=f"How do I change the billing address on invoice {i}? " * 3,
                  tenant=f"tenant-{i % 7}", locale="en-US", metadata={"app": "web", "n": i})
        for i in range(n)
    ]


Timing = tuple[float, float]
"""(events/s by wall time, CPU µs per event)."""


def _timed(run: Callable[[], None], n: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 1e6


def sdk_rate(settings: FlywheelSettings, events: list[ChatEvent]) -> Timing:
    def run() -> None:
        with ChatEventProducer(settings.kafka, producer_name="bench") as producer:
            for event in events:
                producer.send(event)

    return _timed(run, len(events))


def warm_sdk_rate(settings: FlywheelSettings, events: list[ChatEvent]) -> Timing:
    """Queue and acknowledge the events on a producer that already has its producer id."""
    with ChatEventProducer(settings.kafka, producer_name="bench") as producer:
        producer.send_and_wait(events[0])

        def run() -> None:
            for event in events:
                producer.send(event)
            producer.flush()

        return _timed(run, len(events))


def plain_rate(settings: FlywheelSettings, payloads: list[tuple[bytes, bytes]]) -> Timing:
    return _timed(lambda: _plain(settings, payloads, lambda item: item), len(payloads))


def warm_plain_rate(
    settings: FlywheelSettings, items: list[Any], prepare: Callable[[Any], tuple[bytes, bytes]]
) -> Timing:
    """`plain_rate` (or `plain_encoding_rate`) on a producer that already has its producer id."""
    producer = _plain_producer(settings)
    key, value = prepare(items[0])
    producer.produce(CHAT_EVENTS.name, value=value, key=key)
    producer.flush()
    return _timed(lambda: _plain_loop(producer, items, prepare), len(items))


def plain_encoding_rate(settings: FlywheelSettings, events: list[ChatEvent]) -> Timing:
    return _timed(lambda: _plain(settings, events, _encoded), len(events))


def _encoded(event: ChatEvent) -> tuple[bytes, bytes]:
    return event.conversation_id.encode(), encode(event, producer="bench")


def _plain(settings: FlywheelSettings, items: list[Any], prepare: Any) -> None:
    producer = _plain_producer(settings)
    _plain_loop(producer, items, prepare)
    del producer  # released inside the timing, as `ChatEventProducer.close` does


def _plain_producer(settings: FlywheelSettings) -> Producer:
    options = settings.kafka.producer
    return Producer({
        **settings.kafka.client_config(), "client.id": "bench", "enable.idempotence": True,
        "acks": "all", "compression.type": options.compression,
        "linger.ms": options.linger_ms, "batch.size": options.batch_size_bytes,
        "queue.buffering.max.messages": options.queue_max_messages,
        "delivery.timeout.ms": options.delivery_timeout_ms,
    })


def _plain_loop(producer: Producer, items: list[Any], prepare: Any) -> None:
    for item in items:
        key, value = prepare(item)
        while True:
            try:
                producer.produce(CHAT_EVENTS.name, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()


def ingest_load(settings: FlywheelSettings, *, requests: int, clients: int) -> dict[str, float]:
    url = f"http://{settings.ingest.host}:{settings.ingest.port}"
    env = {**os.environ, SETTINGS_ENV: settings_to_json(settings)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_ingest"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": "Bearer flywheel-dev-key"}
        bodies = [e.model_dump_json().encode() for e in make_events(requests)]
        latencies_ms: list[float] = []
        failures = [0]
        lock = threading.Lock()

        def worker(share: list[bytes]) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                for body in share:
                    t0 = time.perf_counter()
                    response = client.post("/v1/events/chat", content=body)
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        latencies_ms.append(elapsed)
                        failures[0] += response.status_code != 202

        threads = [threading.Thread(target=worker, args=(bodies[i::clients],))
                   for i in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    quantiles = statistics.quantiles(latencies_ms, n=100)
    return {"rps": requests / elapsed_s, "p50": quantiles[49], "p99": quantiles[98],
            "failures": failures[0]}


def with_port_offset(settings: FlywheelSettings, offset: int) -> FlywheelSettings:
    """Kafka and the ingest service on the default ports plus `offset`."""
    d = FlywheelSettings()
    kafka = settings.kafka.model_copy(update={"port": d.kafka.port + offset,
                                              "controller_port": d.kafka.controller_port + offset})
    ingest = settings.ingest.model_copy(update={"port": d.ingest.port + offset})
    return settings.model_copy(update={"kafka": kafka, "ingest": ingest})


def _row(name: str, timings: list[Timing]) -> str:
    rates, cpus = [t[0] for t in timings], [t[1] for t in timings]
    return (f"| {name} | {median(rates):,.0f} | {median(cpus):.1f} | "
            f"{', '.join(f'{v:,.0f}' for v in rates)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--port-offset", type=int, default=PORT_OFFSET,
                        help="added to the default Kafka and ingest ports (default 30000)")
    args = parser.parse_args()
    timings: dict[str, list[Timing]] = {
        "plain": [], "plain+encode": [], "sdk": [],
        "warm plain": [], "warm plain+encode": [], "warm sdk": [],
    }
    loads: list[float] = []  # the machine's 1-minute load average around the rounds
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        settings = with_port_offset(bench_settings(Path(tmp)), args.port_offset)
        stack = build_stack(settings)
        try:
            stack.up(["kafka"])
            ensure_topics(settings)
            events = make_events(args.events)
            payloads = [(e.conversation_id.encode(), encode(e, producer="bench")) for e in events]
            runs: dict[str, Callable[[int], Timing]] = {
                "plain": lambda n: plain_rate(settings, payloads[:n]),
                "plain+encode": lambda n: plain_encoding_rate(settings, events[:n]),
                "sdk": lambda n: sdk_rate(settings, events[:n]),
                "warm plain": lambda n: warm_plain_rate(settings, payloads[:n], lambda i: i),
                "warm plain+encode": lambda n: warm_plain_rate(settings, events[:n], _encoded),
                "warm sdk": lambda n: warm_sdk_rate(settings, events[:n]),
            }
            for run in runs.values():  # warm-up: the broker's producer ids, code paths
                run(2_000)
            names = list(runs)
            loads.append(os.getloadavg()[0])
            for round_index in range(args.rounds):
                shift = round_index % len(names)
                order = names[shift:] + names[:shift]
                for name in order:
                    timings[name].append(runs[name](args.events))
                print("  ".join(f"{n} {timings[n][-1][0]:,.0f}/s {timings[n][-1][1]:.1f} µs"
                                for n in names))
            loads.append(os.getloadavg()[0])
            load = ingest_load(settings, requests=args.requests, clients=4)
            loads.append(os.getloadavg()[0])
            print(load)
        finally:
            stack.down()
    rate = {name: median([t[0] for t in ts]) for name, ts in timings.items()}
    cpu = {name: median([t[1] for t in ts]) for name, ts in timings.items()}
    offset_flag = "" if args.port_offset == PORT_OFFSET else f" --port-offset {args.port_offset}"
    body = f"""
Command: `.venv/bin/python -m bench.bench_ingest --events {args.events} --rounds {args.rounds} --requests {args.requests}{offset_flag}`
(a fresh local Kafka 4.1.1 broker, 6-partition topic, idempotent producer, acks=all, lz4).
Each run creates its client, queues {args.events:,} events, waits for every acknowledgement
and releases the client (the warm rows: see below); one warm-up run each, then rounds in
rotating order. CPU is the
bench process's CPU time (all threads, librdkafka's included) per event. The machine's
1-minute load average was {loads[0]:.1f} before the rounds, {loads[1]:.1f} after them and
{loads[2]:.1f} after the HTTP load (2 cores, shared with other work).

| producer | median events/s | median CPU µs/event | events/s per round |
|---|---|---|---|
{_row("plain confluent-kafka, events serialised beforehand (baseline)", timings["plain"])}
{_row("plain confluent-kafka serialising each event with `schemas.encode` in the loop", timings["plain+encode"])}
{_row("`ChatEventProducer.send` (serialises each event)", timings["sdk"])}
{_row("warm: plain confluent-kafka, serialised beforehand", timings["warm plain"])}
{_row("warm: plain confluent-kafka serialising with `schemas.encode`", timings["warm plain+encode"])}
{_row("warm: `ChatEventProducer.send`", timings["warm sdk"])}

SDK / plain pre-serialised (the issue's baseline, "the same serialized events"):
**{rate["sdk"] / rate["plain"]:.2f}** events/s (goal ≥ 0.9), {cpu["plain"] / cpu["sdk"]:.2f} by CPU per event.
SDK / plain serialising in its loop (the same work as the SDK):
**{rate["sdk"] / rate["plain+encode"]:.2f}** events/s, {cpu["plain+encode"] / cpu["sdk"]:.2f} by CPU per event.
Serialising the envelope (pydantic's serializer writes the payload, about 2 µs of it),
which the SDK cannot skip, costs {cpu["plain+encode"] - cpu["plain"]:.1f} µs of CPU per event here; the SDK's own
cost on top is {cpu["sdk"] - cpu["plain+encode"]:.1f} µs, mostly the delivery report of every event handed to
Python (so a failed delivery reaches the caller), which the plain loops skip.
Every run starts a new idempotent producer, and no batch leaves before it has a producer
id: about 0.5 s here (librdkafka retries the id request on a 500 ms timer once its
bootstrap connection gives way to the broker's own). While the SDK's send loop fits in
that wait, the SDK keeps pace with the pre-serialised loop; when other work on the 2 cores
stretches the loop past it, events/s follow CPU per event and the serialising cost shows.
The warm rows time the same events on a client that already has its producer id (its
first acknowledgement awaited before the timing, its release after it): there the send
loop sets the pace. SDK / plain pre-serialised is **{rate["warm sdk"] / rate["warm plain"]:.2f}** events/s there
({cpu["warm plain"] / cpu["warm sdk"]:.2f} by CPU per event), and SDK / plain serialising in its loop
**{rate["warm sdk"] / rate["warm plain+encode"]:.2f}** ({cpu["warm plain+encode"] / cpu["warm sdk"]:.2f} by CPU): a long-lived producer sending flat out
pays for serialising, which the pre-serialised baseline does before the clock starts.

HTTP ingest (`flywheel ingest serve`, one uvicorn worker; 4 concurrent clients, one
event per request, {args.requests} requests, each 202 only after Kafka acknowledged):
**{load['rps']:,.0f} requests/s**, latency p50 {load['p50']:.1f} ms, p99 {load['p99']:.1f} ms,
{int(load['failures'])} failed requests.
"""
    write_section("Producer SDK and HTTP ingest", body)
    print(body)


if __name__ == "__main__":
    main()
