"""The worker's fast paths give the answers of the slow code they replace.

Language (langid.py's own classifier), toxicity (alt-profanity-check's `predict_prob`),
envelope decoding (`schemas.envelope.decode`), PII redaction (every pattern on every
text) and near duplicates (MinHash estimates against true Jaccard similarity).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.base import Text
from schemas.chat import ChatEvent
from schemas.envelope import decode, encode
from schemas.errors import SchemaValidationError, UnknownSchemaError
from schemas.feedback import FeedbackEvent
from schemas.platform import ReasonCode
from streams import pii, tokens, toxicity
from streams.clean import detect_language
from streams.decoding import decode_chat, decode_feedback, text_is_valid
from streams.dedup import DuplicateWindow, Fingerprinter, word_hash
from streams.pii_view import view_of
from streams.safety import toxicity_scores
from streams.tokens import WordIds, words

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VOCABULARY = ("the account export report customer billing update android password invoice "
              "model answer quickly please error server timeout refund shipping order plan "
              "support feature python data table chart weekly meeting summary").split()


def _labeled_languages() -> list[dict[str, str]]:
    lines = (FIXTURES / "language_labeled.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _random_texts(count: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 120)))
            for _ in range(count)]


def test_language_detection_is_right_on_at_least_90_percent_of_a_labeled_set() -> None:
    rows = _labeled_languages()
    right = sum(detect_language(r["text"], sample_chars=160)[0] == r["language"] for r in rows)
    assert len(rows) >= 30 and right / len(rows) >= 0.9


def test_language_detection_gives_langids_own_answer() -> None:
    from langid.langid import LanguageIdentifier, model

    reference = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    texts = [r["text"] for r in _labeled_languages()] + _random_texts(100, seed=3)
    for text in texts:
        expected_language, expected_confidence = reference.classify(text[:160])
        language, confidence = detect_language(text, sample_chars=160)
        assert language == expected_language
        assert confidence == pytest.approx(expected_confidence, abs=1e-6)
    assert detect_language("12 34", sample_chars=160) == ("und", 0.0)


def test_toxicity_scores_equal_profanity_checks_predict_prob() -> None:
    from profanity_check import predict_prob

    lines = (FIXTURES / "safety_labeled.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines] + _random_texts(50, seed=5) + [
        "", "!!!", "a", "you stupid fucking idiot " * 3, "Ünïcödé ſtupid idiot"]
    expected = predict_prob(texts)
    assert toxicity_scores(texts) == pytest.approx(list(expected), abs=1e-9)
    tokens = [words(t.lower()) for t in texts]
    assert toxicity_scores(texts, tokens=tokens) == pytest.approx(list(expected), abs=1e-9)


def test_words_are_the_regex_word_runs() -> None:
    for text in ["Hello, world! it's 2024_x", "ÀB c-d", "tab\tand\nnewline", ""]:
        assert words(text.lower()) == re.findall(r"\w+", text.lower())


@pytest.mark.parametrize(("max_words", "piece_chars"),
                         [(20, 1 << 20), (300, 1 << 20), (200_000, 1 << 20), (200_000, 50)])
def test_word_ids_number_the_regex_word_runs_of_every_text(
        max_words: int, piece_chars: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_PIECE_CHARS", piece_chars)
    rng = random.Random(max_words + piece_chars)
    letters = "abxyz09_ -.,'\n!"
    numbered = WordIds(max_words=max_words)
    for _ in range(100):  # ASCII batches, mixed ones and all-other-letters ones
        others = rng.choice(["", "é", "éß日"])
        texts = ["".join(rng.choice(letters + others) for _ in range(rng.randint(0, 40)))
                 for _ in range(rng.randint(0, 8))]
        texts += [" ".join("w" * rng.randint(1, 12) for _ in range(rng.randint(0, 4)))]
        ids, bounds = numbered.ids_of_texts(texts)
        assert len(bounds) == len(texts) + 1 and bounds[-1] == len(ids)
        for index, text in enumerate(texts):
            assert numbered.words_of(ids[bounds[index]:bounds[index + 1]]) == re.findall(
                r"\w+", text)


def test_toxicity_scores_of_word_ids_equal_profanity_checks_predict_prob() -> None:
    from profanity_check import predict_prob

    lines = (FIXTURES / "safety_labeled.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines] + _random_texts(50, seed=6) + [
        "", "!!!", "a", "you stupid fucking idiot " * 3, "Ünïcödé ſtupid idiot"]
    numbered = WordIds()
    ids, bounds = numbered.ids_of_texts([t.lower() for t in texts])
    assert toxicity.scores_of_ids(texts, ids, bounds, numbered) == pytest.approx(
        list(predict_prob(texts)), abs=1e-9)


def test_fingerprints_of_word_hashes_equal_fingerprints_of_texts() -> None:
    texts = _random_texts(40, seed=8) + ["", "one", "two words", "three words here", "x" * 90]
    fingerprinter = Fingerprinter(min_chars=20, permutations=64)
    numbered = WordIds()
    ids, bounds = numbered.ids_of_texts([t.lower() for t in texts])
    hashes = numbered.fact("word_hash", word_hash, np.uint64)[ids]
    for (digest, signature), (expected_digest, expected_signature) in zip(
            fingerprinter.fingerprints_of_hashes(texts, hashes, bounds.tolist()),
            fingerprinter.fingerprints(texts), strict=True):
        assert digest == expected_digest
        assert (signature is None) == (expected_signature is None)
        if signature is not None:
            assert signature.tobytes() == expected_signature.tobytes()


def test_text_check_accepts_exactly_what_the_contract_accepts() -> None:
    adapter = TypeAdapter(Text)
    for code_point in [*range(0, 0x3000), *range(0xD700, 0xE100), 0xFEFF, 0x1F600, 0x10FFFF]:
        text = f"a{chr(code_point)}b"
        try:
            adapter.validate_python(text)
            valid = True
        except ValidationError:
            valid = False
        assert text_is_valid(text) is valid, f"U+{code_point:04X}"
    assert not text_is_valid("") and not text_is_valid("x" * 32_001)
    assert text_is_valid("x" * 32_000)


def _chat() -> bytes:
    event = ChatEvent(conversation_id="c1", turn_index=1, role="assistant", text="PLACEHOLDER",
                      model="m", model_version="v1", tenant="acme", metadata={"topic": "x"})
    return encode(event, producer="test")


def _with_text(raw: str) -> bytes:
    return _chat().replace(b'"PLACEHOLDER"', raw.encode())


def _outcome(function: object, data: bytes) -> object:
    try:
        return function(data)  # type: ignore[operator]
    except (SchemaValidationError, UnknownSchemaError) as e:
        return type(e), str(e)


@pytest.mark.parametrize("data", [
    _with_text('"a normal turn"'),
    _with_text('"line one\\nline two\\ttabbed"'),
    _with_text('"emoji \\ud83d\\ude00 ok"'),
    _with_text('"bell \\u0007 inside"'),
    _with_text('"lone \\ud800 surrogate"'),
    _with_text('"c1 \\u0085 control"'),
    _with_text('""'),
    _with_text(json.dumps("x" * 32_001)),
    _with_text("42"),
    _chat().replace(b'"schema_version":1', b'"schema_version":2'),
    _chat().replace(b'"schema_version":1', b'"schema_version":true'),
    _chat().replace(b'"kind":"chat_event"', b'"kind":"feedback_event"'),
    _chat().replace(b'"model":"m"', b'"model":null'),
    _chat().replace(b'"tenant":"acme"', b'"tenant":"a b"'),
    _chat().replace(b'"metadata":{', b'"metadata":{"nested":{"a":1},'),
    _chat().replace(b'"payload":{', b'"payload":{"extra":1,'),
    _chat()[:-5],
    b"[1, 2]",
    encode(FeedbackEvent(conversation_id="c", turn_event_id=uuid.uuid4(), kind="thumbs_up",
                         tenant="t"), producer="test"),
], ids=lambda d: d[-60:].decode("utf-8", "replace"))
def test_chat_decoding_gives_the_envelope_decoders_verdict(data: bytes) -> None:
    expected = _outcome(lambda d: decode(d, expect=ChatEvent).payload, data)
    assert _outcome(decode_chat, data) == expected


def _feedback() -> bytes:
    event = FeedbackEvent(conversation_id="c1", turn_event_id=uuid.UUID(int=1), kind="rating",
                          rating=4, comment="fine", tenant="acme")
    return encode(event, producer="test")


@pytest.mark.parametrize("data", [
    _feedback(),
    _feedback().replace(b'"schema_version":1', b'"schema_version":2'),
    _feedback().replace(b'"schema_version":1', b'"schema_version":true'),
    _feedback().replace(b'"kind":"feedback_event"', b'"kind":"chat_event"'),
    _feedback().replace(b'"rating":4', b'"rating":9'),
    _feedback().replace(b'"payload":{', b'"payload":{"extra":1,'),
    _feedback()[:-5],
    _chat(),
    b"[1, 2]",
], ids=lambda d: d[-60:].decode("utf-8", "replace"))
def test_feedback_decoding_gives_the_envelope_decoders_verdict(data: bytes) -> None:
    expected = _outcome(lambda d: decode(d, expect=FeedbackEvent).payload, data)
    assert _outcome(decode_feedback, data) == expected


def _reference_redact(text: str) -> str:
    """The redaction before the fast paths: every pattern on every text."""
    counts: Counter[str] = Counter()
    if not any(c.isdigit() or c in "@\uff20\ufe6b" for c in text) and "eyJ" not in text:
        return pii._sub(pii._SECRET, "secret", text, counts)
    text = pii._sub(pii._SECRET, "secret", text, counts)
    view = view_of(text)
    return pii.replace_spans(text, view, pii._find(view.text, prefilter=False),
                             lambda _start, _end, label: f"[{label.upper()}]")


def test_redaction_shortcuts_change_no_result() -> None:
    texts = [json.loads(line)["text"] for name in ("pii_positive.jsonl", "pii_clean.jsonl",
                                                     "pii_adversarial.jsonl",
                                                     "pii_adversarial_clean.jsonl")
             for line in (FIXTURES / name).read_text().splitlines()]
    texts += [
        "my password is hunter2222", "Password: correct-horse", "the token=abcdefgh here",
        "mytoken=abcdefgh and then token: zyxwvuts", "paſsword=hunter2222",
        "api key is sk-live-abcdefghijklmnop1234", "AKIAABCDEFGHIJKLMNOP",
        "Bearer abc.def-ghi_jkl+mno",
        "a long 0123456789abcdefghijklmnopqrstuv key", "dead::beef and fe80::1",
        "call 415 555 0134 or ²", "secret key: n0t-a-real-key", "xoxb-1234567890-abc",
        "eyJhbGciOiJI.eyJzdWIiOiIx.SflKxwRJSMeK", "plain words only, with a key and a token",
        "xpassword: abcdefghi", "secretsecret: abcdefgh", "api_key=abcdefgh, secret_key is "
        "abcdefgh and access token: abcdefgh", "auth-token = 'abcdefgh' token token: abcdefgh",
        "password password password", "the passwd is letmein99; my_token=abcdefgh",
    ]
    for text in texts:
        assert pii.redact(text).text == _reference_redact(text), text


def _shingles(text: str) -> set[str]:
    tokens = text.split()
    return {" ".join(tokens[i:i + 3]) for i in range(len(tokens) - 2)}


def test_near_duplicates_are_found_above_the_threshold_and_not_far_below_it() -> None:
    rng = random.Random(11)
    found_high = total_high = found_low = total_low = 0
    for _ in range(300):
        base = [rng.choice([*VOCABULARY, *(f"w{i}" for i in range(300))])
                for _ in range(rng.randint(60, 150))]
        edited = list(base)
        for _ in range(rng.randint(0, 12)):
            edited[rng.randrange(len(edited))] = rng.choice(["alpha", "beta", "gamma"])
        a, b = " ".join(base), " ".join(edited) + " end"
        jaccard = len(_shingles(a) & _shingles(b)) / len(_shingles(a) | _shingles(b))
        window = DuplicateWindow(window_records=10, threshold=0.9, min_chars=20,
                                 permutations=64)
        window.check(uuid.uuid4(), a)
        near = window.check(uuid.uuid4(), b) is ReasonCode.NEAR_DUPLICATE
        if jaccard >= 0.95:
            total_high, found_high = total_high + 1, found_high + near
        elif jaccard <= 0.75:
            total_low, found_low = total_low + 1, found_low + near
    assert total_high >= 20 and found_high / total_high >= 0.9
    assert total_low >= 20 and found_low == 0
