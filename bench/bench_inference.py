"""Serving: hot swaps under sustained load through the gateway, and gateway overhead.

    .venv/bin/python -m bench.bench_inference [--base PATH] [--clients 8] [--steady-s 15]
        [--swaps 3] [--rounds 5] [--per-client 10]

A fresh Triton + Kafka (ports offset by 24000), the model of `--base` (default: a tiny
random GPT-2 built on the spot) as version 1 and a LoRA adapter on it as versions 2, 3...
`flywheel gateway serve` and `flywheel inference controller` run as their own processes.

1. Overhead: rounds alternate N requests straight to Triton over gRPC and through the
   gateway over HTTP, with 1 client and with `--clients` threads; the medians of the
   per-round p50 ratios are reported.
2. Swaps: `--clients` threads loop on the gateway; `--swaps` times, after `--steady-s` a
   ModelPublished for the next version is sent, and they go on until it has answered for
   5 s. Per swap: p99 of requests started in the steady period before the publish against
   p99 of those started between the publish and the first new-version answer + 2 s, the
   time from the publish to that answer, and where Triton's log places the model's
   in-place switch (the `flywheel: activated version N ... in X ms` line). Failed
   requests are counted over the whole run; a machine this noisy needs the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_stack import bench_settings
from bench.report import median, write_section
from deploy.local.stack import build_stack
from deploy.settings import SETTINGS_ENV, FlywheelSettings, settings_to_json
from inference.client import GenerationOptions, TritonChat
from inference.events import ModelPublishedProducer
from inference.gateway.api import Message
from inference.gateway.prompt import render_prompt
from inference.gateway.server import free_port
from inference.repository import adapter_sha256
from inference.swap import SwapController
from inference.tiny_model import build_tiny_adapter, build_tiny_base
from schemas import DatasetSnapshot, ModelPublished
from streams.topics import ensure_topics

KEY = {"Authorization": "Bearer flywheel-dev-key"}
ASK: dict[str, Any] = {"messages": [{"role": "user", "content": "my laptop does not start"}], "max_tokens": 16}
EXTRA_PORT_OFFSET = 4000


def settings_for(state_dir: Path, base: Path) -> FlywheelSettings:
    s = bench_settings(state_dir)
    shift = EXTRA_PORT_OFFSET
    return s.model_copy(update={
        "kafka": s.kafka.model_copy(update={"port": s.kafka.port + shift,
                                            "controller_port": s.kafka.controller_port + shift}),
        "triton": s.triton.model_copy(update={"http_port": s.triton.http_port + shift,
                                              "grpc_port": s.triton.grpc_port + shift,
                                              "metrics_port": s.triton.metrics_port + shift}),
        "model": s.model.model_copy(update={"name": "bench-chat", "base_model_path": base}),
        "inference": s.inference.model_copy(update={"gateway_port": free_port(),
                                                    "device": "cpu"}),
    })


def spawn(settings: FlywheelSettings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, SETTINGS_ENV: settings_to_json(settings)}
    return subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


def load(fn: object, *, clients: int, per_client: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [fn() for _ in range(per_client)]  # type: ignore[operator]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def overhead(settings: FlywheelSettings, url: str, *, clients: int, rounds: int,
             per_client: int) -> tuple[list[float], list[float]]:
    prompt = render_prompt([Message(role="user", content=ASK["messages"][0]["content"])])
    options = GenerationOptions(max_new_tokens=int(ASK["max_tokens"]))
    direct_p50, gateway_p50 = [], []
    local = threading.local()

    def direct() -> float:
        if not hasattr(local, "chat"):
            local.chat = TritonChat(settings.triton.grpc_address, model=settings.model.name)
        t = time.perf_counter()
        local.chat.complete(prompt, options=options)
        return (time.perf_counter() - t) * 1000

    def via_gateway() -> float:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, headers=KEY, timeout=30)
        t = time.perf_counter()
        local.http.post("/v1/chat/completions", json=ASK).raise_for_status()
        return (time.perf_counter() - t) * 1000

    for _ in range(rounds):
        direct_p50.append(statistics.median(load(direct, clients=clients, per_client=per_client)))
        gateway_p50.append(
            statistics.median(load(via_gateway, clients=clients, per_client=per_client)))
        print(f"p50 direct {direct_p50[-1]:.1f} ms, gateway {gateway_p50[-1]:.1f} ms")
    return direct_p50, gateway_p50


TRITON_LOG_LINE = re.compile(r'^[IWE](\d{2})(\d{2}) (\d{2}:\d{2}:\d{2}\.\d+) .*?\] "?(.*?)"?$')
ACTIVATED = re.compile(r"flywheel: activated version (\d+) \(.*\) in ([\d.]+) ms")


def _log_lines(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, message) of every Triton log line, which Triton stamps in local time."""
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        match = TRITON_LOG_LINE.match(line)
        if match is not None:
            month, day, clock, message = match.groups()
            stamp = datetime.strptime(f"{datetime.now().year}-{month}-{day} {clock}",
                                      "%Y-%m-%d %H:%M:%S.%f").timestamp()
            lines.append((stamp, message))
    return lines


def triton_load_span(log: Path, model: str, version: int) -> tuple[float, float] | None:
    """Epoch seconds of Triton's `loading: model:version` and the `successfully loaded` after."""
    started = None
    for stamp, message in _log_lines(log):
        if message == f"loading: {model}:{version}":
            started = stamp
        elif started is not None and message == f"successfully loaded '{model}'":
            return started, stamp
    return None


def switch_span(log: Path, version: int) -> tuple[float, float] | None:
    """Epoch seconds when the model began and finished switching to `version` in place."""
    for stamp, message in _log_lines(log):
        match = ACTIVATED.search(message)
        if match is not None and int(match.group(1)) == version:
            return stamp - float(match.group(2)) / 1000, stamp
    return None


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def publish(settings: FlywheelSettings, adapter: Path, version: int) -> float:
    """Send ModelPublished for `version` (the bench adapter); returns the epoch time sent."""
    event = ModelPublished(
        model=settings.model.name, version=version, adapter_id=f"bench-adapter-{version}",
        base_model=str(settings.base_model_path()), adapter_uri=str(adapter),
        adapter_sha256=adapter_sha256(adapter), previous_version=version - 1,
        dataset=DatasetSnapshot(window_start=datetime(2026, 1, 1, tzinfo=UTC),
                                window_end=datetime(2026, 1, 2, tzinfo=UTC), query="bench",
                                train_rows=1, validation_rows=1, content_sha256="0" * 64))
    with ModelPublishedProducer(settings.kafka, producer_name="bench") as producer:
        sent = time.time()
        producer.publish(event)
    return sent


def swaps_under_load(settings: FlywheelSettings, url: str, adapter: Path, *, clients: int,
                     steady_s: float, swaps: int) -> list[dict[str, float]]:
    """`swaps` successive publishes (versions 2, 3, ...) while `clients` loop on the gateway.

    Each swap: `steady_s` of load, the publish, then load until the new version has
    answered for 5 s. Times are epoch seconds, so Triton's log lines can be placed.
    """
    records: list[tuple[float, float, int, bool]] = []  # start, latency ms, version, ok
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        with httpx.Client(base_url=url, headers=KEY, timeout=60) as http:
            while not stop.is_set():
                t = time.time()
                reason = ""
                try:
                    r = http.post("/v1/chat/completions", json=ASK)
                    ok, version = r.status_code == 200, (
                        r.json()["flywheel"]["version"] if r.status_code == 200 else -1)
                    reason = "" if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, version, reason = False, -1, f"{type(e).__name__}: {e}"
                with lock:
                    records.append((t, (time.time() - t) * 1000, version, ok))
                    if reason:
                        failures[reason] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    results = []
    try:
        for version in range(2, 2 + swaps):
            phase_start = time.time()
            time.sleep(steady_s)
            published = publish(settings, adapter, version)
            first_new = wait_for_version(records, lock, version, timeout_s=120)
            if first_new is None:
                raise RuntimeError(f"version {version} never answered; see the controller log "
                                   f"and the failures: {dict(failures.most_common(3))}")
            time.sleep(5)
            with lock:
                done = list(records)
            steady = [r[1] for r in done if phase_start <= r[0] < published and r[3]]
            during = [r[1] for r in done if published <= r[0] <= first_new + 2 and r[3]]
            span = switch_span(settings.state_path / "logs" / "triton.log", version)
            results.append({
                "version": version, "steady_p99": p99(steady), "swap_p99": p99(during),
                "steady_n": len(steady), "swap_n": len(during),
                "to_new_s": first_new - published,
                "switch_start_s": span[0] - published if span else float("nan"),
                "switch_ms": (span[1] - span[0]) * 1000 if span else float("nan"),
            })
            print(f"swap to {version}: {results[-1]}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    if failures:
        print(f"failed requests by reason: {dict(failures.most_common(5))}")
    for result in results:
        result["failures"] = float(sum(1 for r in records if not r[3]))
        result["requests"] = float(len(records))
    return results


def wait_for_version(records: list[tuple[float, float, int, bool]], lock: threading.Lock,
                     version: int, *, timeout_s: float) -> float | None:
    """Epoch time the first answer of `version` arrived, or None after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lock:
            news = [r[0] + r[1] / 1000 for r in records if r[2] == version]
        if news:
            return min(news)
        time.sleep(0.1)
    return None


def overhead_line(label: str, direct: list[float], gateway: list[float]) -> str:
    ratios = [g / d for d, g in zip(direct, gateway, strict=True)]
    return (f"{label}: p50 direct {median(direct):.1f} ms, through the gateway "
            f"{median(gateway):.1f} ms; per-round ratios "
            f"{', '.join(f'{r:.2f}' for r in ratios)}: median **{median(ratios):.2f}×**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steady-s", type=float, default=15.0)
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-client", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-inference-") as tmp_name:
        tmp = Path(tmp_name)
        base = args.base or build_tiny_base(tmp / "tiny-base", layers=4, width=256,
                                            context_tokens=256, vocab_size=2000)
        adapter = build_tiny_adapter(base, tmp / "adapter")
        settings = settings_for(tmp / "state", base)
        stack = build_stack(settings)
        procs: list[subprocess.Popen[bytes]] = []
        started_load = os.getloadavg()[0]
        try:
            stack.up(["kafka", "triton"])
            ensure_topics(settings)
            SwapController(settings).start()
            procs.append(spawn(settings, "gateway", "serve", log=tmp / "gateway.log"))
            procs.append(spawn(settings, "inference", "controller", log=tmp / "ctl.log"))
            url = f"http://{settings.inference.gateway_host}:{settings.inference.gateway_port}"
            wait_http(f"{url}/healthz")
            time.sleep(3)  # the controller's consumer joins its group
            single = overhead(settings, url, clients=1, rounds=args.rounds,
                              per_client=4 * args.per_client)
            loaded = overhead(settings, url, clients=args.clients, rounds=args.rounds,
                              per_client=args.per_client)
            swaps = swaps_under_load(settings, url, adapter, clients=args.clients,
                                     steady_s=args.steady_s, swaps=args.swaps)
            # Version 1 was loaded with no traffic: the same load on this machine, alone.
            alone = triton_load_span(settings.state_path / "logs" / "triton.log",
                                     settings.model.name, 1)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            print((tmp / "ctl.log").read_text()[-2000:] if (tmp / "ctl.log").exists() else "")
            stack.down()
    ended_load = os.getloadavg()[0]
    model = f"`{args.base}`" if args.base else "a random GPT-2 (4 layers, 256 wide, 2k vocab)"
    command = (f".venv/bin/python -m bench.bench_inference --clients {args.clients} "
               f"--steady-s {args.steady_s:g} --swaps {args.swaps} --rounds {args.rounds} "
               f"--per-client {args.per_client}" + (f" --base {args.base}" if args.base else ""))
    rows = "\n".join(
        f"| {int(r['version'])} | {r['steady_p99']:.0f} (n={int(r['steady_n'])}) | "
        f"{r['swap_p99']:.0f} (n={int(r['swap_n'])}) | {r['swap_p99'] / r['steady_p99']:.2f}× | "
        f"+{r['switch_start_s']:.2f} s | {r['switch_ms']:.0f} ms | {r['to_new_s']:.2f} s |"
        for r in swaps)
    ratio = median([r["swap_p99"] / r["steady_p99"] for r in swaps])
    to_new = median([r["to_new_s"] for r in swaps])
    body = f"""
Command: `{command}`
(Triton 2.51 CPU, Python backend, one instance, one torch thread, dynamic batching up to 8,
adapters switched in place inside the serving instance;
model: {model}, 16 new tokens greedy; gateway and controller in their own processes.
The machine is shared: 1-minute load average {started_load:.1f} at the start,
{ended_load:.1f} at the end, on 2 cores.)

**Swap under load** ({args.clients} concurrent gateway clients; {args.swaps} successive
LoRA versions published, each after {args.steady_s:g} s of steady load):
**{int(swaps[-1]['failures'])} failed** of {int(swaps[-1]['requests'])} requests.
Median p99 during a swap / steady p99 before it: **{ratio:.2f}×** (aim ≤ 1.2×);
median ModelPublished → new version answering: **{to_new:.2f} s** (aim ≤ 6 s).

| version | steady p99 ms | p99 during swap ms | ratio | model starts switching | switch in the model | new version answers |
|---|---|---|---|---|---|---|
{rows}

"model starts switching" is Kafka + the controller (consume, stage the adapter, send the
control request, which then waits behind the batch being generated); "switch in the model"
is the serving instance reading the adapter, checking its hash, merging it and checking the
merged weights with one forward pass, between two batches; "new version answers" is when the first answer tagged
with the new version arrived at a client. No Triton load happens during a swap: Triton
loaded the model once at the start, with no traffic, in
{(alone[1] - alone[0]) if alone else float("nan"):.1f} s.

**Gateway overhead** ({args.rounds} rounds alternating direct gRPC to Triton and the gateway
over HTTP; medians of per-round p50s):
- {overhead_line(f"1 client × {4 * args.per_client} requests", *single)} (aim ≤ 1.10×);
- {overhead_line(f"{args.clients} clients × {args.per_client} requests", *loaded)}.
"""
    write_section("Inference: hot swap and gateway", body)
    print(body)


if __name__ == "__main__":
    main()
