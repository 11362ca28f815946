"""Embedded ClickHouse: the HTTP front against clickhouse-connect's in-process chDB.

Run on purpose:  .venv/bin/python bench/bench_clickhouse.py [--batches 8] [--write]

Both sides get the same 100k-row Native batches of a chat-event table through the same
clickhouse-connect API; runs are interleaved so machine noise hits both alike. Prints
medians and ratios; `--write` replaces the "## Embedded ClickHouse" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect  # noqa: E402

from deploy.clickhouse.client import get_client  # noqa: E402
from deploy.local.clickhouse import ClickHouseService  # noqa: E402
from deploy.settings import FlywheelSettings  # noqa: E402

ROWS_PER_BATCH = 100_000
SCHEMA = """(
    event_id UUID, conversation_id UUID, ts DateTime64(3, 'UTC'),
    topic LowCardinality(String), role LowCardinality(String), model_version LowCardinality(String),
    text String, tokens UInt32, latency_ms Float32, feedback Nullable(Int8)
) ENGINE = MergeTree ORDER BY (topic, ts)"""
COLUMNS = ["event_id", "conversation_id", "ts", "topic", "role", "model_version", "text",
           "tokens", "latency_ms", "feedback"]
TOPICS = ["ai", "computers", "emotion", "food", "health", "history", "money", "movies", "science"]
WORDS = "the model answered about pricing refund error latency hello thanks café 日本 🚀".split()


def make_batch(seed: int) -> list[list[Any]]:
    """One batch as columns (column_oriented insert), like a Faust sink would buffer it."""
    rnd = random.Random(seed)
    base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    n = ROWS_PER_BATCH
    conversations = [uuid.UUID(int=rnd.getrandbits(128)) for _ in range(n // 8)]
    return [
        [uuid.UUID(int=rnd.getrandbits(128)) for _ in range(n)],
        [conversations[i // 8] for i in range(n)],
        [base + dt.timedelta(milliseconds=i * 37) for i in range(n)],
        [TOPICS[rnd.randrange(len(TOPICS))] for _ in range(n)],
        ["user" if i % 2 == 0 else "assistant" for i in range(n)],
        ["v3" if i % 3 else "v4-lora" for i in range(n)],
        [" ".join(rnd.choices(WORDS, k=rnd.randint(3, 30))) for _ in range(n)],
        [rnd.randint(1, 512) for _ in range(n)],
        [rnd.random() * 400 for _ in range(n)],
        [None if i % 4 else rnd.choice((-1, 1)) for i in range(n)],
    ]


def start_server(state_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], FlywheelSettings]:
    defaults = FlywheelSettings()
    settings = FlywheelSettings(state_dir=state_dir,
                                clickhouse=defaults.clickhouse.model_copy(update={"port": port}))
    service = ClickHouseService(settings)
    spec = service.launch_spec()
    process = subprocess.Popen(spec.argv, env={**os.environ, **spec.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not service.check_health().healthy:
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("the embedded ClickHouse server did not start")
        time.sleep(0.1)
    return process, settings


def timed_insert(client: Any, table: str, batch: list[list[Any]]) -> float:
    started = time.perf_counter()
    client.insert(table, batch, column_names=COLUMNS, column_oriented=True)
    return ROWS_PER_BATCH / (time.perf_counter() - started)


def latencies_ms(client: Any, query: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        client.query(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--port", type=int, default=28900)
    parser.add_argument("--write", action="store_true", help="Write the figures to BENCHMARKS.md")
    args = parser.parse_args()

    batches = [make_batch(seed) for seed in range(2)]  # reused: generation is not measured
    with tempfile.TemporaryDirectory() as tmp:
        process, settings = start_server(Path(tmp) / "state", args.port)
        try:
            http = get_client(settings)  # lz4, as Flywheel's code uses it
            local = clickhouse_connect.get_client(interface="chdb", path=str(Path(tmp) / "inproc"))
            for client in (http, local):
                client.command("CREATE DATABASE IF NOT EXISTS flywheel")
                client.command(f"CREATE TABLE flywheel.events {SCHEMA}")
                timed_insert(client, "flywheel.events", batches[0])  # warm-up
            rates: dict[str, list[float]] = {"http": [], "chdb": []}
            for i in range(args.batches):
                order = [("http", http), ("chdb", local)] if i % 2 == 0 else [("chdb", local),
                                                                               ("http", http)]
                for name, client in order:
                    rates[name].append(timed_insert(client, "flywheel.events", batches[i % 2]))
            small = "SELECT topic, count() FROM flywheel.events WHERE tokens > 500 GROUP BY topic"
            lat: dict[str, dict[str, list[float]]] = {"http": {}, "chdb": {}}
            for name, client in (("http", http), ("chdb", local)):
                lat[name]["select1"] = latencies_ms(client, "SELECT 1", args.queries)
                lat[name]["groupby"] = latencies_ms(client, small, max(50, args.queries // 3))
            http.close()
            local.close()
        finally:
            process.terminate()
            process.wait(30)

    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [
        "## Embedded ClickHouse",
        "",
        f"`.venv/bin/python bench/bench_clickhouse.py --batches {args.batches} "
        f"--queries {args.queries}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, shared and noisy), {time.strftime('%Y-%m-%d')}. "
        "HTTP = `flywheel`'s embedded server (chDB 26.9 behind ClickHouse's HTTP interface, "
        "another process), clickhouse-connect over HTTP with lz4. In-process = "
        "`clickhouse_connect.get_client(interface=\"chdb\")` in the benchmark process (the "
        "baseline, same run, interleaved). Batches: 100k rows of a 10-column chat-event "
        "table (UUIDs, DateTime64, LowCardinality, text, Nullable), column-oriented Native.",
        "",
        "| measure | HTTP front | in-process chDB | HTTP / in-process |",
        "|---|---|---|---|",
        f"| insert, median rows/s ({args.batches} batches each) | {med['http']:,.0f} | "
        f"{med['chdb']:,.0f} | {med['http'] / med['chdb']:.2f} |",
    ]
    for key, label in (("select1", "`SELECT 1`"), ("groupby", "small GROUP BY on the table")):
        h, c = lat["http"][key], lat["chdb"][key]
        lines.append(f"| {label} p50 / p99 ms | {pct(h, .5):.2f} / {pct(h, .99):.2f} | "
                     f"{pct(c, .5):.2f} / {pct(c, .99):.2f} | "
                     f"{pct(h, .5) / pct(c, .5):.2f} (p50) |")
    lines += ["", f"Insert rows/s per batch, HTTP: {[round(r) for r in rates['http']]}; "
              f"in-process: {[round(r) for r in rates['chdb']]}.", ""]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", report)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) only the "## Embedded ClickHouse" section; others are untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Embedded ClickHouse\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
