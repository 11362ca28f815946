"""Precision and recall of the safety filter on the labeled fixture set (shared with bench)."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.settings import StreamsSettings
from streams.safety import SafetyFilter, toxicity_scores

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "safety_labeled.jsonl"
LABELS = {"toxic": "toxic", "identity_attack": "identity_attack", "biased": "biased"}


def evaluate() -> dict[str, tuple[float, float]]:
    """label -> (precision, recall); a text counts as flagged for a label when its code is set.

    `toxic` is scored on whether the text was rejected at all for toxicity or an attack,
    since the classifier's hits on group attacks are reported as identity attacks.
    """
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    flt = SafetyFilter(StreamsSettings())
    scores = toxicity_scores([r["text"] for r in rows])
    verdicts = [flt.judge(r["text"], s) for r, s in zip(rows, scores, strict=True)]
    figures = {}
    for label in LABELS:
        tp = fp = fn = 0
        for row, verdict in zip(rows, verdicts, strict=True):
            predicted = label in {code.value for code in verdict.reasons}
            if row[label] and predicted:
                tp += 1
            elif predicted and not row[label] and not any(row[k] for k in LABELS):
                fp += 1  # only clean texts count as false positives for a label
            elif row[label] and not predicted:
                fn += 1
        figures[label] = (tp / max(tp + fp, 1), tp / max(tp + fn, 1))
    rejected_clean = sum(bool(v.reasons) for r, v in zip(rows, verdicts, strict=True)
                         if not any(r[k] for k in LABELS))
    figures["clean_pass_rate"] = (1 - rejected_clean / sum(
        not any(r[k] for k in LABELS) for r in rows), 0.0)
    return figures


if __name__ == "__main__":
    for name, (p, r) in evaluate().items():
        print(f"{name}: precision {p:.3f} recall {r:.3f}")
