"""Private-data detection: recall, false redaction and cost per event, three detectors.

    .venv/bin/python -m bench.bench_pii [--repeats 5] [--baseline-ref 7daf3ca]
        [--presidio-path DIR]

Detectors, on the same labeled sets and the same texts:
- **flywheel**: `streams.pii.redact` as it is now;
- **before**: `streams/pii.py` at `--baseline-ref` (the commit before issue 17's work),
  read with `git show`;
- **presidio**: Microsoft Presidio's pattern recognizers (credit card with Luhn, email,
  phone through `phonenumbers`, US SSN, IBAN, IP), called directly with no NLP engine,
  every finding replaced (the analyzer's default score threshold is 0). Only with
  `--presidio-path`, a folder where `pip install --target DIR presidio-analyzer spacy`
  put them: they are not project dependencies (spaCy is, and a model from a hub by default).

Figures: recall on the adversarial set of issue 17 (`pii_adversarial.jsonl`, 720 private
values) and on the older set (`pii_positive.jsonl`); clean strings changed
(`pii_clean.jsonl` + `pii_adversarial_clean.jsonl`, 540); cost per event on the texts of
`bench_streams`' events (turns of 20-400 words, 5% private-data or toxic bait), the median
of `--repeats` passes, and per adversarial string.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_streams import events
from bench.report import median, write_section
from tests.streams.test_pii_adversarial import leaked

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "streams" / "fixtures"

Redactor = Callable[[str], str]


def _rows(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def before(ref: str) -> Redactor:
    source = subprocess.run(["git", "show", f"{ref}:streams/pii.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="pii-before-")) / "pii_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pii_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return lambda text: str(module.redact(text).text)


def flywheel() -> Redactor:
    from streams.pii import redact

    return lambda text: redact(text).text


def presidio(path: str) -> Redactor:
    sys.path.append(path)  # after the project's packages: only what they lack comes from it
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    recognizers = [CreditCardRecognizer(), EmailRecognizer(), PhoneRecognizer(),
                   UsSsnRecognizer(), IbanRecognizer(), IpRecognizer()]

    def redact(text: str) -> str:
        spans = sorted((r.start, r.end, r.entity_type) for recognizer in recognizers
                       for r in recognizer.analyze(text, recognizer.supported_entities, None))
        out, done = [], 0
        for start, end, kind in spans:
            if start >= done:
                out += [text[done:start], f"[{kind}]"]
                done = end
        return "".join(out) + text[done:]

    redact("warm up alice@example.com")  # tldextract's suffix list, once
    return redact


def recall(redact: Redactor, name: str) -> tuple[float, int]:
    found = total = 0
    for row in _rows(name):
        out = redact(str(row["text"]))
        for value in row["pii"]:  # type: ignore[attr-defined]
            total += 1
            found += not leaked(str(value), out)
    return found / total, total


def changed(redact: Redactor) -> tuple[int, int]:
    texts = [str(r["text"]) for name in ("pii_clean.jsonl", "pii_adversarial_clean.jsonl")
             for r in _rows(name)]
    return sum(redact(t) != t for t in texts), len(texts)


def costs_us(detectors: dict[str, Redactor], texts: list[str], *, repeats: int
             ) -> dict[str, float]:
    """Median µs per text of each detector; the detectors take turns within each repeat,
    so a busy moment of the machine falls on all of them."""
    passes: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(repeats):
        for name, redact in detectors.items():
            started = time.perf_counter()
            for text in texts:
                redact(text)
            passes[name].append((time.perf_counter() - started) / len(texts) * 1e6)
    return {name: median(values) for name, values in passes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", default="7daf3ca")
    parser.add_argument("--presidio-path", default=None)
    args = parser.parse_args()
    stream_texts = [json.loads(value)["payload"]["text"]
                    for kind, _, value in events(20_000, seed=1) if kind == "chat"]
    adversarial = [str(r["text"]) for r in _rows("pii_adversarial.jsonl")]
    detectors = {"flywheel (now)": flywheel(), f"before ({args.baseline_ref})":
                 before(args.baseline_ref)}
    if args.presidio_path:
        detectors["presidio pattern recognizers"] = presidio(args.presidio_path)
    lines = []
    per_event_of = costs_us(detectors, stream_texts, repeats=args.repeats)
    per_string_of = costs_us(detectors, adversarial, repeats=args.repeats)
    for name, redact in detectors.items():
        adv, adv_total = recall(redact, "pii_adversarial.jsonl")
        old, old_total = recall(redact, "pii_positive.jsonl")
        bad, clean_total = changed(redact)
        per_event, per_string = per_event_of[name], per_string_of[name]
        lines.append(f"| {name} | {adv:.3f} | {old:.3f} | {bad} of {clean_total} | "
                     f"{per_event:,.1f} | {per_string:,.1f} |")
        print(lines[-1], flush=True)
    presidio_flag = f" --presidio-path {args.presidio_path}" if args.presidio_path else ""
    body = f"""Command: `.venv/bin/python -m bench.bench_pii --repeats {args.repeats} --baseline-ref {args.baseline_ref}{presidio_flag}`

Recall: share of labeled private values gone from the output (in any script or escape;
{adv_total} values in `pii_adversarial.jsonl`, {old_total} in `pii_positive.jsonl`). Clean
strings changed: years, prices, order numbers, versions, dates, ISBNs, timestamps that a
detector altered. Cost: time per call, median of {args.repeats} passes (the detectors take
turns within each), over the
{len(stream_texts):,} chat texts of `bench_streams`' events and over the
{len(adversarial)} adversarial strings, on this machine's busy cores.

| detector | recall, adversarial | recall, older set | clean strings changed | µs per stream event | µs per adversarial string |
|---|---|---|---|---|---|
{chr(10).join(lines)}
"""
    write_section("Private-data detection (issue 17)", body)
    print(body)


if __name__ == "__main__":
    main()
