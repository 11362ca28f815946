"""Serving: a hot swap under sustained load through the gateway, and gateway overhead.

    .venv/bin/python -m bench.bench_inference [--base PATH] [--clients 8] [--steady-s 15]

A fresh Triton + Kafka (ports offset by 24000), the model of `--base` (default: a tiny
random GPT-2 built on the spot) as version 1 and a LoRA adapter on it as version 2.
`flywheel gateway serve` and `flywheel inference controller` run as their own processes.

1. Overhead: rounds alternate N requests from `--clients` threads straight to Triton over
   gRPC and through the gateway over HTTP; medians of the per-round p50s are compared.
2. Swap: `--clients` threads loop on the gateway; after `--steady-s` a ModelPublished for
   version 2 is sent; they go on until version 2 has answered for a few seconds. Reported:
   failed requests, p99 of requests started before the publish (steady) against p99 of
   requests started between the publish and the first version-2 answer + 2 s (swap), and
   the time from the publish to the first version-2 answer.
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
from datetime import UTC, datetime
from pathlib import Path

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
ASK = {"messages": [{"role": "user", "content": "my laptop does not start"}], "max_tokens": 16}
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


def swap_under_load(settings: FlywheelSettings, url: str, adapter: Path, *, clients: int,
                    steady_s: float) -> dict[str, float]:
    records: list[tuple[float, float, int, bool]] = []  # start, latency ms, version, ok
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        with httpx.Client(base_url=url, headers=KEY, timeout=60) as http:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    r = http.post("/v1/chat/completions", json=ASK)
                    ok, version = r.status_code == 200, (
                        r.json()["flywheel"]["version"] if r.status_code == 200 else -1)
                except httpx.HTTPError:
                    ok, version = False, -1
                with lock:
                    records.append((t, (time.perf_counter() - t) * 1000, version, ok))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(steady_s)
    event = ModelPublished(
        model=settings.model.name, version=2, adapter_id="bench-adapter",
        base_model=str(settings.base_model_path()), adapter_uri=str(adapter),
        adapter_sha256=adapter_sha256(adapter), previous_version=1,
        dataset=DatasetSnapshot(window_start=datetime(2026, 1, 1, tzinfo=UTC),
                                window_end=datetime(2026, 1, 2, tzinfo=UTC), query="bench",
                                train_rows=1, validation_rows=1, content_sha256="0" * 64))
    with ModelPublishedProducer(settings.kafka, producer_name="bench") as producer:
        published = time.perf_counter()
        producer.publish(event)
    deadline = time.monotonic() + 120
    first_new: float | None = None
    while time.monotonic() < deadline:
        with lock:
            news = [r[0] + r[1] / 1000 for r in records if r[2] == 2]
        if news:
            first_new = min(news)
            break
        time.sleep(0.1)
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    if first_new is None:
        raise RuntimeError("version 2 never answered; see the controller log")
    steady = [r[1] for r in records if r[0] < published and r[3]]
    during = [r[1] for r in records if published <= r[0] <= first_new + 2 and r[3]]

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]

    return {"failures": sum(1 for r in records if not r[3]), "requests": len(records),
            "steady_p99": p99(steady), "swap_p99": p99(during), "steady_n": len(steady),
            "swap_n": len(during), "to_new_s": first_new - published,
            "steady_p50": statistics.median(steady)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steady-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
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
        try:
            stack.up(["kafka", "triton"])
            ensure_topics(settings)
            SwapController(settings).start()
            procs.append(spawn(settings, "gateway", "serve", log=tmp / "gateway.log"))
            procs.append(spawn(settings, "inference", "controller", log=tmp / "ctl.log"))
            url = f"http://{settings.inference.gateway_host}:{settings.inference.gateway_port}"
            wait_http(f"{url}/healthz")
            time.sleep(3)  # the controller's consumer joins its group
            direct, gateway = overhead(settings, url, clients=args.clients, rounds=args.rounds,
                                       per_client=args.per_client)
            swap = swap_under_load(settings, url, adapter, clients=args.clients,
                                   steady_s=args.steady_s)
            print(swap)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            print((tmp / "ctl.log").read_text()[-2000:] if (tmp / "ctl.log").exists() else "")
            stack.down()
    model = f"`{args.base}`" if args.base else "a random GPT-2 (4 layers, 256 wide, 2k vocab)"
    command = (f".venv/bin/python -m bench.bench_inference --clients {args.clients} "
               f"--steady-s {args.steady_s:g} --rounds {args.rounds} "
               f"--per-client {args.per_client}" + (f" --base {args.base}" if args.base else ""))
    body = f"""
Command: `{command}`
(Triton 2.51 CPU, Python backend, one instance, one torch thread, dynamic batching up to 8;
model: {model}, 16 new tokens greedy; gateway and controller in their own processes.)

**Swap under load** ({args.clients} concurrent gateway clients, LoRA version 2 published
after {args.steady_s:g} s): {int(swap['failures'])} failed of {int(swap['requests'])} requests;
p99 steady {swap['steady_p99']:.0f} ms (n={int(swap['steady_n'])}) vs p99 during the swap
{swap['swap_p99']:.0f} ms (n={int(swap['swap_n'])}): **{swap['swap_p99'] / swap['steady_p99']:.2f}×**
(aim ≤ 1.2×); ModelPublished → version 2 answering: **{swap['to_new_s']:.1f} s** (aim ≤ 6 s).

**Gateway overhead** ({args.rounds} alternating rounds × {args.clients} clients ×
{args.per_client} requests): p50 direct gRPC to Triton {median(direct):.1f} ms
({", ".join(f"{v:.1f}" for v in direct)}), through the gateway {median(gateway):.1f} ms
({", ".join(f"{v:.1f}" for v in gateway)}): **{median(gateway) / median(direct):.2f}×** (aim ≤ 1.10×).
"""
    write_section("Inference: hot swap and gateway", body)
    print(body)


if __name__ == "__main__":
    main()
