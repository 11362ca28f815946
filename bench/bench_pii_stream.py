"""The stream worker's speed with and without issue 17's redaction, paired in one run.

    .venv/bin/python -m bench.bench_pii_stream [--rounds 3] [--events 20000]
        [--processes 1] [--baseline-ref 7daf3ca]

Two git worktrees of HEAD: "after" as committed, "before" with the redaction files
(`streams/pii.py`, `streams/prepare.py`, `streams/ingest_quarantine.py`) as they were at
`--baseline-ref`, so everything else (worker, sink, join) is the same code. Each round runs
`bench.bench_streams --runs 1` in one, then the other, alternating which goes first, so
the machine's load falls on both alike. Figures are the medians over the rounds, and the
ratio after / before. The worktrees are removed afterwards.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import median, write_section

ROOT = Path(__file__).resolve().parent.parent
REDACTION_FILES = ("streams/pii.py", "streams/prepare.py", "streams/ingest_quarantine.py")
FIGURES = {
    "baseline": "baseline: plain confluent-kafka consumer",
    "no_helpers": "one stream worker, no helper processes",
    "one": "one stream worker, end to end",
    "p99": "latency at",
}


def _git(*args: str, cwd: Path = ROOT) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _figures(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in output.splitlines():
        for key, label in FIGURES.items():
            if label in line and (key != "p99" or "p99" in line):
                number = re.search(r"\| ([\d,]+) (?:events/s|ms)", line)
                if number:
                    found[key] = float(number.group(1).replace(",", ""))
    return found


def _run(tree: Path, *, events: int, processes: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_streams", "--events", str(events), "--runs", "1",
         "--processes", str(processes), "--latency-s", "10"],
        cwd=tree, check=True, capture_output=True, text=True)
    return _figures(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--baseline-ref", default="7daf3ca")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="flywheel-pii-ab-") as tmp:
        trees = {name: Path(tmp) / name for name in results}
        for tree in trees.values():
            _git("worktree", "add", "--detach", str(tree), "HEAD")
        try:
            _git("checkout", args.baseline_ref, "--", *REDACTION_FILES, cwd=trees["before"])
            for round_ in range(args.rounds):
                order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                for name in order:
                    figures = _run(trees[name], events=args.events, processes=args.processes)
                    results[name].append(figures)
                    print(round_, name, figures, flush=True)
        finally:
            for tree in trees.values():
                _git("worktree", "remove", "--force", str(tree))

    def med(name: str, key: str) -> float:
        return median([r[key] for r in results[name] if key in r])

    rows = []
    for key, label in (("one", f"one worker, {args.processes} helper process(es)"),
                       ("no_helpers", "one worker, no helper processes"),
                       ("baseline", "baseline consumer (no processing)")):
        b, a = med("before", key), med("after", key)
        runs_b = ", ".join(f"{r[key]:,.0f}" for r in results["before"] if key in r)
        runs_a = ", ".join(f"{r[key]:,.0f}" for r in results["after"] if key in r)
        rows.append(f"| {label} | {b:,.0f} ({runs_b}) | {a:,.0f} ({runs_a}) | {a / b:.2f} |")
    b, a = med("before", "p99"), med("after", "p99")
    rows.append(f"| p99 produce -> inserted at 2,000 events/s | {b:,.0f} ms | {a:,.0f} ms | "
                f"{a / b:.2f} |")
    body = f"""Command: `.venv/bin/python -m bench.bench_pii_stream --rounds {args.rounds} --events {args.events} --processes {args.processes} --baseline-ref {args.baseline_ref}`

Each round runs `bench.bench_streams --events {args.events} --runs 1 --processes {args.processes} --latency-s 10` in a worktree of HEAD
with the redaction files of `{args.baseline_ref}` ("before") and in one of HEAD ("after"), alternating which runs first.
Medians of {args.rounds} rounds, each round's figure in brackets, events/s unless marked.

| figure | before | after | after / before |
|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("Stream worker with issue 17's redaction (paired)", body)
    print(body)


if __name__ == "__main__":
    main()
