"""The demo's report: one HTML file with its plots, each under the query that made it.

Written to `<state_dir>/demo/<run id>/report.html`, with every plot also saved as a PNG
beside it. The queries run against the demo's database as printed, so an analyst can
paste them into `flywheel --config <run folder>/flywheel.toml sql "..."` and go on from
there; the page says so with the run's own path.
"""

from __future__ import annotations

import base64
import html
import io
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.demo.run import DemoOutcome

THROUGHPUT_SQL = """\
SELECT toStartOfInterval(ts, INTERVAL 10 SECOND) AS t, role, count() AS turns
FROM chat_turns FINAL
GROUP BY t, role ORDER BY t"""

QUARANTINE_OVER_TIME_SQL = """\
SELECT toStartOfInterval(quarantined_at, INTERVAL 10 SECOND) AS t, count() AS records
FROM quarantine FINAL
GROUP BY t ORDER BY t"""

LATENCY_SQL = """\
SELECT model_version,
       quantiles(0.5, 0.95, 0.99)(latency_ms) AS p50_p95_p99_ms, count() AS answers
FROM chat_turns FINAL
WHERE role = 'assistant' AND latency_ms IS NOT NULL
GROUP BY model_version ORDER BY min(ts)"""

QUARANTINE_SQL = """\
SELECT primary_reason, count() AS records
FROM quarantine FINAL
GROUP BY primary_reason ORDER BY records DESC"""

DRIFT_SQL = """\
SELECT evaluated_at, statistic, threshold, p_value, status, reference_source
FROM drift_evaluations
WHERE detector = 'embedding_mmd' AND tenant = 'all'
ORDER BY evaluated_at"""

ALERTS_SQL = """\
SELECT name, status, starts_at, received_at
FROM alerts FINAL
WHERE name IN ('FlywheelEmbeddingDrift', 'FlywheelFeatureDrift')
ORDER BY received_at"""

EVALUATIONS_SQL = """\
SELECT candidate_version, baseline_version, passed, reason,
       perplexity_new, baseline_perplexity_new,
       perplexity_regression, baseline_perplexity_regression
FROM evaluations FINAL
ORDER BY evaluated_at"""


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    query: str
    png: bytes
    file_name: str


def write_report(client: Any, outcome: DemoOutcome, *, folder: Path, database: str,
                 config_path: Path) -> Path:
    """Run the queries, draw the plots, write `report.html` and the PNGs into `folder`.

    Args:
        database: the ClickHouse database the queries read (named on the page).
        config_path: the run's settings file, for the `flywheel --config ... sql` line.
    """
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    figures = [
        _throughput(client, outcome),
        _latency(client, outcome),
        _quarantine(client),
        _drift(client, outcome),
        _perplexity(outcome),
    ]
    for figure in figures:
        (folder / figure.file_name).write_bytes(figure.png)
    evaluations = _rows(client, EVALUATIONS_SQL)
    path = folder / "report.html"
    page = _html(outcome, figures, evaluations, database=database, config_path=config_path)
    path.write_text(page, encoding="utf-8")
    return path


# -- plots ------------------------------------------------------------------------------


def _marks(ax: Any, outcome: DemoOutcome) -> None:
    """Vertical lines at each swap, the shift and the alert, on a time axis."""
    for version, at in outcome.served[1:]:
        ax.axvline(at, color="tab:green", linestyle="--", linewidth=1)
        ax.annotate(f"v{version} serving", (at, 1), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="tab:green")
    for key, color, label in (("shift", "tab:purple", "traffic shift"),
                              ("drift_fired", "tab:red", "drift alert"),
                              ("drift_resolved", "tab:blue", "alert resolved")):
        mark = outcome.marks.get(key)
        if mark is not None:
            ax.axvline(mark, color=color, linestyle=":", linewidth=1.2)
            ax.annotate(label, (mark, 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=8, color=color)


def _throughput(client: Any, outcome: DemoOutcome) -> Figure:
    import matplotlib.pyplot as plt

    rows = _rows(client, THROUGHPUT_SQL)
    quarantined = _rows(client, QUARANTINE_OVER_TIME_SQL)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for role in ("user", "assistant"):
        points = [(t, n / 10) for t, r, n in rows if r == role]
        if points:
            ax.plot(*zip(*points, strict=True), label=f"curated {role} turns/s")
    if quarantined:
        ax.plot(*zip(*[(t, n / 10) for t, n in quarantined], strict=True),
                label="quarantined records/s", color="tab:red")
    _marks(ax, outcome)
    ax.set_ylabel("per second (10 s buckets)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _figure(fig, "Throughput into the warehouse",
                   "Curated turns and quarantined records landing in ClickHouse.",
                   THROUGHPUT_SQL + "\n\n" + QUARANTINE_OVER_TIME_SQL, "throughput.png")


def _latency(client: Any, outcome: DemoOutcome) -> Figure:
    import matplotlib.pyplot as plt

    rows = _rows(client, LATENCY_SQL)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4),
                                      gridspec_kw={"width_ratios": [1, 2]})
    # Adapter ids are `<model>-v<N>`; the version alone reads better under a bar.
    labels = [str(r[0]).rsplit("-", 1)[-1] or "?" for r in rows]
    for i, name in enumerate(("p50", "p95", "p99")):
        left.bar([x + i * 0.27 for x in range(len(rows))], [r[1][i] for r in rows], 0.27,
                 label=name)
    left.set_xticks([x + 0.27 for x in range(len(rows))], labels, fontsize=8)
    left.set_ylabel("Triton latency (ms)")
    left.legend(fontsize=8)
    samples = outcome.samples
    for version in sorted({s.version for s in samples}):
        points = [(datetime.fromtimestamp(s.at, UTC), s.latency_ms) for s in samples
                  if s.version == version]
        right.scatter(*zip(*points, strict=True), s=4, label=f"v{version}")
    right.set_ylabel("gateway round trip (ms)")
    right.legend(fontsize=8, markerscale=3)
    fig.autofmt_xdate()
    return _figure(fig, "Latency per version",
                   "Left: Triton's latency per adapter, as the gateway recorded it in the chat "
                   "events. Right: each simulated user's round trip through the gateway.",
                   LATENCY_SQL, "latency.png")


def _quarantine(client: Any) -> Figure:
    import matplotlib.pyplot as plt

    rows = _rows(client, QUARANTINE_SQL)
    fig, ax = plt.subplots(figsize=(9, 3.0))
    ax.barh([str(r[0]) for r in rows][::-1], [r[1] for r in rows][::-1], color="tab:red")
    ax.set_xlabel("records")
    return _figure(fig, "Quarantine reasons",
                   "Why records were kept out of the curated data (the original bytes stay in "
                   "the quarantine topic for replay).", QUARANTINE_SQL, "quarantine.png")


def _drift(client: Any, outcome: DemoOutcome) -> Figure:
    import matplotlib.pyplot as plt

    rows = [r for r in _rows(client, DRIFT_SQL) if r[4] != "insufficient_data"]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    if rows:
        ax.plot([r[0] for r in rows], [r[1] for r in rows], marker=".", label="MMD statistic")
        ax.plot([r[0] for r in rows], [r[2] for r in rows], linestyle="--", color="gray",
                label="threshold (permutation test)")
    _marks(ax, outcome)
    ax.set_ylabel("MMD²")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.autofmt_xdate()
    return _figure(fig, "Embedding drift of user turns",
                   "The monitor's MMD two-sample test of the current window against the data "
                   "the serving version was trained on, with the alert's firing and resolving.",
                   DRIFT_SQL + "\n\n" + ALERTS_SQL, "drift.png")


def _perplexity(outcome: DemoOutcome) -> Figure:
    import matplotlib.pyplot as plt

    rows = outcome.perplexity
    fig, ax = plt.subplots(figsize=(9, 3.2))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r.old_topics for r in rows], 0.4, label="old topics")
    ax.bar([i + 0.2 for i in x], [r.new_topics for r in rows], 0.4, label="new topics")
    ax.set_xticks(list(x), [f"v{r.version}" for r in rows])
    ax.set_ylabel("held-out perplexity")
    ax.legend(fontsize=8)
    return _figure(fig, "Perplexity per version",
                   "On corpus pairs the simulated users never sent (lower is better). Computed "
                   "by the demo with the trainer's loaders; the gate's own measurements are "
                   "in the evaluations table below.",
                   "-- computed in Python: deploy/demo/versions.py\n" + EVALUATIONS_SQL,
                   "perplexity.png")


def _figure(fig: Any, title: str, caption: str, query: str, file_name: str) -> Figure:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return Figure(title, caption, query, buffer.getvalue(), file_name)


def _rows(client: Any, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(query).result_rows]


# -- HTML --------------------------------------------------------------------------------


def summary_rows(outcome: DemoOutcome) -> list[tuple[str, str]]:
    """The run in a few lines, for the terminal table and the report."""
    o = outcome
    rows = [("model", o.plan.model), ("chat requests", f"{o.chats:,}"),
            ("failed gateway requests", str(len(o.failed_requests))),
            ("feedback sent", ", ".join(f"{k} {v}" for k, v in sorted(o.feedback.items()))),
            ("hostile inputs", ", ".join(f"{k} {v}" for k, v in sorted(o.hostile.items())))]
    if o.accounting is not None:
        a = o.accounting
        rows.append(("replayed records", f"{a.records:,}: {a.curated:,} curated, "
                     f"{a.quarantined:,} quarantined, {a.errors} errors, {a.missing} missing"))
        rows.append(("rejected ingest bodies", f"{o.hostile_rejected} sent, "
                     f"{a.rejected_bodies_quarantined} in quarantine"))
    if o.private_data is not None:
        scan = o.private_data
        rows.append(("raw private data", f"{scan.raw_rows} rows, in {scan.columns} text "
                     f"columns of {scan.tables} tables ({scan.rows_read:,} rows read)"))
    start = o.marks.get("traffic_started")
    for version, at in o.served[1:]:
        when = f" at +{(at - start).total_seconds():.0f} s" if start else ""
        rows.append((f"version {version}", f"serving{when}"))
    fired, resolved, shift = (o.marks.get(k) for k in ("drift_fired", "drift_resolved", "shift"))
    if fired and shift:
        rows.append((o.drift_alert or "drift alert",
                     f"fired {(fired - shift).total_seconds():.0f} s after the "
                     "shift" + (f", resolved {(resolved - shift).total_seconds():.0f} s after"
                                if resolved else "")))
    for p in o.perplexity:
        rows.append((f"v{p.version} perplexity", f"old topics {p.old_topics:.1f}, "
                     f"new topics {p.new_topics:.1f}"))
    rows.append(("phases", ", ".join(f"{k} {v:.0f} s" for k, v in o.phases_s.items())))
    rows.append(("result", "passed" if o.passed else "FAILED: " + "; ".join(o.problems)))
    return rows


def _html(outcome: DemoOutcome, figures: list[Figure], evaluations: list[tuple[Any, ...]],
          *, database: str, config_path: Path) -> str:
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                      for k, v in summary_rows(outcome))
    sections = []
    for f in figures:
        data = base64.b64encode(f.png).decode()
        sections.append(
            f"<section><h2>{esc(f.title)}</h2><p>{esc(f.caption)}</p>"
            f'<img alt="{esc(f.title)}" src="data:image/png;base64,{data}">'
            f"<details><summary>query</summary><pre>{esc(f.query)}</pre></details></section>")
    evaluation_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_cell(c))}</td>" for c in row) + "</tr>"
        for row in evaluations)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flywheel demo {esc(outcome.plan.run_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; }}
</style></head><body>
<h1>Flywheel demo: the loop on one machine</h1>
<p>Run {esc(outcome.plan.run_id)}, started {esc(outcome.started_at.isoformat(timespec="seconds"))}:
model <code>{esc(outcome.plan.model)}</code> in database <code>{esc(database)}</code>.
Every query on this page runs as printed, while the stack is up:
<code>flywheel --config {esc(shlex.quote(str(config_path)))} sql "..."</code></p>
<table>{summary}</table>
{"".join(sections)}
<section><h2>The gate's decisions</h2><pre>{esc(EVALUATIONS_SQL)}</pre>
<table><tr><th>candidate</th><th>served</th><th>passed</th><th>reason</th>
<th>ppl new</th><th>served ppl new</th><th>ppl regression</th>
<th>served ppl regression</th></tr>
{evaluation_rows}</table></section>
</body></html>
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)
