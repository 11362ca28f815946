"""How long `flywheel stack up` takes: cold (fresh state folder), warm (restart), no-op.

    .venv/bin/python -m bench.bench_stack [--runs 3]

Each run uses its own state folder and ports offset by 30000, so a running developer stack
is left alone. The Kafka jar cache is warm (its cold download is a one-off, measured
separately and quoted in the section).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.report import median, write_section
from deploy.local.stack import build_stack
from deploy.settings import FlywheelSettings

PORT_OFFSET = 30000


def bench_settings(state_dir: Path) -> FlywheelSettings:
    d = FlywheelSettings()
    return FlywheelSettings(
        state_dir=state_dir,
        kafka=d.kafka.model_copy(update={"port": d.kafka.port + PORT_OFFSET,
                                         "controller_port": d.kafka.controller_port + PORT_OFFSET}),
        clickhouse=d.clickhouse.model_copy(update={"port": d.clickhouse.port + PORT_OFFSET}),
        triton=d.triton.model_copy(update={"http_port": d.triton.http_port + PORT_OFFSET,
                                           "grpc_port": d.triton.grpc_port + PORT_OFFSET,
                                           "metrics_port": d.triton.metrics_port + PORT_OFFSET}),
        prometheus=d.prometheus.model_copy(update={"port": d.prometheus.port + PORT_OFFSET}),
        alertmanager=d.alertmanager.model_copy(update={"port": d.alertmanager.port + PORT_OFFSET}),
        metrics=d.metrics.model_copy(update={"port": d.metrics.port + PORT_OFFSET}),
    )


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold, warm, noop, down = [], [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
            stack = build_stack(bench_settings(Path(tmp)))
            try:
                cold.append(timed(stack.up))
                noop.append(timed(stack.up))
                down.append(timed(stack.down))
                warm.append(timed(stack.up))
            finally:
                stack.down()
        print(f"run {run + 1}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s, "
              f"no-op {noop[-1]:.2f} s, down {down[-1]:.1f} s")
    def runs(values: list[float], digits: int = 1) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in values)

    body = f"""
Command: `.venv/bin/python -m bench.bench_stack --runs {args.runs}` (medians of {args.runs} runs;
all five services: ClickHouse, Kafka, Triton, Prometheus, Alertmanager).

| step | median | runs |
|---|---|---|
| cold `stack up` (fresh state folder) | {median(cold):.1f} s | {runs(cold)} |
| warm `stack up` (after `down`, data kept) | {median(warm):.1f} s | {runs(warm)} |
| `stack up` when everything already runs (no-op) | {median(noop):.2f} s | {runs(noop, 2)} |
| `stack down` | {median(down):.1f} s | {runs(down)} |

Ratio warm / cold: {median(warm) / median(cold):.2f}.
"""
    write_section("Local stack start-up", body)
    print(body)


if __name__ == "__main__":
    main()
