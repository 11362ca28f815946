"""Drift detection on a scripted stream: 100,000 stationary events, then a topic shift.

    .venv/bin/python -m bench.bench_drift [--seeds 3] [--shift-share 0.1 0.3]

User turns are statements of the chatterbot English corpus. Before the shift, every event
is drawn from the "stationary" categories; from event 100,000 on, `--shift-share` of the
events come from categories never seen before (sports, health). The reference window is
the first 2,000 events (the adapter's training data). Every 125 events (the monitor's
30 s at about 250 user turns a minute), both detectors look at the last 1,000 events:

- ours: the MMD scan test of `monitoring.drift.embedding` at default settings (the whole
  window and its newest half and quarter, each a permutation test, Bonferroni-combined);
- baseline: the Euclidean distance between the window's mean embedding and the
  reference's (the centroid distance of embedding-drift monitors), with a fixed threshold
  set the usual way: mean + 3 standard deviations of that distance over its evaluations
  in the `CALIBRATION_EVENTS` after the first window (its own history; all stationary).

A false alarm is an alarm whose window lies wholly before the shift. The delay is the
number of events from the shift to the end of the first window that alarms.
Embeddings are computed once per unique statement and cached under `~/.cache/flywheel/bench-drift/`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bench.report import write_section
from deploy.settings import MonitoringSettings
from monitoring.drift.embedding import EmbeddingDriftDetector, SentenceEncoder

SHIFT_CATEGORIES = ("sports", "health")
EXCLUDED = ("conversations", "greetings", "botprofile")
STATIONARY_EVENTS = 100_000
AFTER_SHIFT_EVENTS = 5_000
REFERENCE_EVENTS = 2_000
WINDOW_EVENTS = 1_000
STEP_EVENTS = 125
CALIBRATION_EVENTS = 10_000
CACHE = Path.home() / ".cache" / "flywheel" / "bench-drift"


def corpus() -> dict[str, list[str]]:
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    by_category: dict[str, list[str]] = {}
    for path in sorted(root.glob("*.yml")):
        if path.stem in EXCLUDED:
            continue
        data = yaml.safe_load(path.read_text())
        texts = {str(c[0]).strip() for c in data.get("conversations", []) if c and c[0]}
        by_category[path.stem] = sorted(t for t in texts if len(t) > 3)
    return by_category


def embeddings(texts: list[str]) -> dict[str, np.ndarray]:
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{key}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        vectors = SentenceEncoder(batch_size=128).encode(texts)
        CACHE.mkdir(exist_ok=True)
        np.save(path, vectors)
    return dict(zip(texts, vectors, strict=True))


@dataclass
class Outcome:
    false_alarms: int = 0
    """Evaluations over the threshold whose window lies wholly before the shift."""
    false_alerts: int = 0
    """The same, two evaluations in a row: what pages (the embedding rule's `for: 45s` at
    one evaluation every 30 s)."""
    delay_events: int | None = None
    alert_delay_events: int | None = None
    evaluations: int = 0
    previous_alarm: bool = False
    statistic: list[tuple[int, float, float]] = field(default_factory=list)
    """(event, statistic / threshold, baseline distance / threshold) per evaluation."""

    def update(self, alarm: bool, *, end: int) -> None:
        alert = alarm and self.previous_alarm
        self.previous_alarm = alarm
        self.evaluations += 1
        if end <= STATIONARY_EVENTS:
            self.false_alarms += alarm
            self.false_alerts += alert
            return
        if alarm and self.delay_events is None:
            self.delay_events = end - STATIONARY_EVENTS
        if alert and self.alert_delay_events is None:
            self.alert_delay_events = end - STATIONARY_EVENTS


def stream(by_category: dict[str, list[str]], *, seed: int, shift_share: float) -> list[str]:
    rng = np.random.default_rng(seed)
    stationary = [t for c, ts in by_category.items() if c not in SHIFT_CATEGORIES for t in ts]
    shifted = [t for c in SHIFT_CATEGORIES for t in by_category[c]]
    events = [stationary[i] for i in rng.integers(0, len(stationary), STATIONARY_EVENTS)]
    for _ in range(AFTER_SHIFT_EVENTS):
        pool = shifted if rng.random() < shift_share else stationary
        events.append(pool[rng.integers(0, len(pool))])
    return events


def run(streams: dict[float, list[str]], vectors: dict[str, np.ndarray], *, seed: int
        ) -> dict[float, tuple[Outcome, Outcome]]:
    """Both detectors on one seed's streams, one per shift share.

    `stream` draws the stationary part first, so it is the same for every share: it is
    evaluated once, and each share's evaluations after the shift continue from there.
    """
    matrices = {share: np.stack([vectors[t] for t in events]) for share, events in streams.items()}
    first = next(iter(matrices.values()))
    if any(not np.array_equal(m[:STATIONARY_EVENTS], first[:STATIONARY_EVENTS])
           for m in matrices.values()):
        raise ValueError("the streams of one seed must share their stationary part")
    reference = first[:REFERENCE_EVENTS]
    defaults = MonitoringSettings()
    detector = EmbeddingDriftDetector(alpha=defaults.alpha, permutations=defaults.permutations,
                                      min_rows=defaults.min_window_rows,
                                      max_rows=defaults.max_window_rows,
                                      scan_fractions=defaults.embedding_scan_fractions,
                                      bandwidth_factor=defaults.embedding_bandwidth_factor,
                                      seed=seed)
    centroid = reference.mean(axis=0)
    ends = list(range(REFERENCE_EVENTS + WINDOW_EVENTS, len(first) + 1, STEP_EVENTS))
    history = [float(np.linalg.norm(first[end - WINDOW_EVENTS:end].mean(0) - centroid))
               for end in ends if end <= REFERENCE_EVENTS + WINDOW_EVENTS + CALIBRATION_EVENTS]
    baseline_threshold = statistics.mean(history) + 3 * statistics.stdev(history)

    def evaluate(matrix: np.ndarray, end: int, ours: Outcome, base: Outcome) -> None:
        window = matrix[end - WINDOW_EVENTS:end]
        # Newest first, as the monitor reads its windows.
        result = detector.compare(reference, window[::-1])
        distance = float(np.linalg.norm(window.mean(0) - centroid))
        if result.drifted and end <= STATIONARY_EVENTS:
            print(f"  false alarm at event {end}: {result.detail}")
        ours.update(result.drifted, end=end)
        base.update(distance > baseline_threshold, end=end)
        ours.statistic.append((end, result.statistic / result.threshold,
                               distance / baseline_threshold))

    ours, base = Outcome(), Outcome()
    for end in ends:
        if end <= STATIONARY_EVENTS:
            evaluate(first, end, ours, base)
    outcomes = {}
    for share, matrix in matrices.items():
        share_ours, share_base = copy.deepcopy(ours), copy.deepcopy(base)
        for end in ends:
            if end <= STATIONARY_EVENTS:
                continue
            evaluate(matrix, end, share_ours, share_base)
            if share_ours.alert_delay_events is not None and (
                    share_base.alert_delay_events is not None):
                break
        outcomes[share] = (share_ours, share_base)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shift-share", type=float, nargs="+", default=[0.3],
                        help="One or more shares; they share the stationary evaluations.")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    by_category = corpus()
    texts = sorted({t for ts in by_category.values() for t in ts})
    started = time.perf_counter()
    vectors = embeddings(texts)
    print(f"{len(texts)} unique statements embedded in {time.perf_counter() - started:.1f} s")

    rows: dict[float, list[tuple[int, Outcome, Outcome, float]]] = {s: [] for s in args.shift_share}
    for seed in range(args.seeds):
        started = time.perf_counter()
        outcomes = run({share: stream(by_category, seed=seed, shift_share=share)
                        for share in args.shift_share}, vectors, seed=seed)
        elapsed = time.perf_counter() - started
        for share, (ours, base) in outcomes.items():
            rows[share].append((seed, ours, base, elapsed))
            print(f"seed {seed}, {share:.0%} shift: ours delay={ours.delay_events}/"
                  f"{ours.alert_delay_events} false alarms={ours.false_alarms}/"
                  f"{ours.false_alerts} | baseline delay={base.delay_events}/"
                  f"{base.alert_delay_events} false alarms={base.false_alarms}/"
                  f"{base.false_alerts} | {ours.evaluations} evaluations; seed took "
                  f"{elapsed:.0f} s", flush=True)
            if seed == 0:
                name = f"drift_benchmark_shift{round(share * 100)}.png"
                plot(ours, Path(__file__).resolve().parent.parent / "docs" / name)

    command = (f"`.venv/bin/python -m bench.bench_drift --seeds {args.seeds} --shift-share "
               f"{' '.join(str(s) for s in args.shift_share)}`")
    for share, share_rows in rows.items():
        body = report(share, share_rows, command=command, categories=len(by_category),
                      seeds=args.seeds)
        print(body)
        if not args.no_write:
            write_section(f"Drift detection (bench_drift, {share:.0%} shift)", body)


def report(share: float, rows: list[tuple[int, Outcome, Outcome, float]], *, command: str,
           categories: int, seeds: int) -> str:
    def med(values: list[int | None]) -> str:
        known = [v for v in values if v is not None]
        return "not detected" if not known else f"{statistics.median(known):,.0f}"

    return f"""\
{command}

Stream: {STATIONARY_EVENTS:,} stationary events (chatterbot English statements of
{categories - len(SHIFT_CATEGORIES)} categories), then {share:.0%} of events
from unseen categories ({", ".join(SHIFT_CATEGORIES)}). Reference: the first
{REFERENCE_EVENTS:,} events; a window of the last {WINDOW_EVENTS:,} events every
{STEP_EVENTS} events. Same streams, same windows for both detectors; {seeds} seeds.

| detector | median delay, one evaluation (events after the shift) | false alarms, one evaluation | median delay, alert (2 evaluations in a row) | false alerts |
|---|---|---|---|---|
| MMD scan test (whole window, newest 1/2 and 1/4, Bonferroni; Pearson III tail), default settings (alpha 1e-4; ours) | {med([r[1].delay_events for r in rows])} | {sum(r[1].false_alarms for r in rows)} | {med([r[1].alert_delay_events for r in rows])} | {sum(r[1].false_alerts for r in rows)} |
| centroid distance, threshold mean + 3 sd of its evaluations in the first {REFERENCE_EVENTS + WINDOW_EVENTS + CALIBRATION_EVENTS:,} events (baseline) | {med([r[2].delay_events for r in rows])} | {sum(r[2].false_alarms for r in rows)} | {med([r[2].alert_delay_events for r in rows])} | {sum(r[2].false_alerts for r in rows)} |

False alarms are counted over {seeds} x {STATIONARY_EVENTS:,} stationary events
({seeds} x {rows[0][1].evaluations if rows else 0} evaluations, most before the shift).
An alert is two over-threshold evaluations in a row, which is what the Prometheus rule's
`for: 45s` pages on at one evaluation every 30 s (`monitoring.evaluation_interval_s`).

Per seed (delay ours / baseline; false alarms ours / baseline; false alerts ours / baseline;
alert delay ours / baseline):
{chr(10).join(f"- seed {s}: {o.delay_events} / {b.delay_events}; {o.false_alarms} / {b.false_alarms}; {o.false_alerts} / {b.false_alerts}; {o.alert_delay_events} / {b.alert_delay_events} ({e:.0f} s)" for s, o, b, e in rows)}

Granularity: delays are multiples of the {STEP_EVENTS}-event evaluation step.
"""


def plot(outcome: Outcome, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    events = [e for e, _, _ in outcome.statistic]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(events, [s for _, s, _ in outcome.statistic], label="MMD / threshold (ours)")
    ax.plot(events, [b for _, _, b in outcome.statistic], label="centroid distance / threshold")
    ax.axvline(STATIONARY_EVENTS, color="red", linestyle="--", label="topic shift")
    ax.axhline(1.0, color="gray", linestyle=":", label="alarm")
    ax.set_yscale("log")
    ax.set_xlabel("event")
    ax.set_ylabel("statistic / threshold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
