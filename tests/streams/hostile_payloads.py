"""A seeded generator of hostile request bodies for Flywheel's HTTP ingress.

`hostile_payloads(route, count=N, seed=S)` yields N `Payload`s for one route kind, the same
N for the same seed. Each starts from a valid body and breaks it one or two ways, as an
attacker or a buggy client would: wrong types, huge numbers, deep nesting, dates outside
the stored range, lone surrogates, control characters, other encodings, sizes near and
over the caps, duplicate keys, truncated JSON and wrong content types. Some stay valid, so
the accepting path runs under the same load.

The JSON is written by hand (`_dump`), not by `json.dumps`, so that a body can hold what
the standard library refuses to write: duplicate keys, raw fragments such as a 5,000-digit
integer or `NaN`, and escapes of lone surrogates.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Route = Literal["chat_event", "feedback_event", "chat_batch", "feedback_batch",
                "chat_completion", "gateway_feedback"]


@dataclass(frozen=True)
class Payload:
    """One request: body, headers (content type and credentials) and why it is hostile.

    `authorized` says whether the credentials are good: either a Bearer token or an
    X-API-Key naming the key is enough, whatever the other header says.
    """

    body: bytes
    headers: dict[str, str]
    authorized: bool
    label: str


@dataclass(frozen=True)
class Raw:
    """A JSON fragment written as is (`NaN`, a 5,000-digit integer, `"\\ud800"`)."""

    text: str


class Pairs(list[tuple[str, Any]]):
    """A JSON object as key-value pairs, so a key may repeat."""


def _dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{_dump(k)}:{_dump(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dump(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    # ensure_ascii=False keeps raw control characters and non-ASCII for the encodings step.
    return json.dumps(value, ensure_ascii=False)


# -- valid bases ---------------------------------------------------------------------------

def _chat_event(rng: random.Random) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "conversation_id": f"c-{rng.randrange(10**6)}", "turn_index": rng.randrange(50),
            "role": "user", "text": rng.choice(["Where is my parcel?", "hola", "ok 👍"]),
            "tenant": "acme", "timestamp": "2026-11-26T10:00:00Z",
            "metadata": {"topic": "support"}}


def _feedback_event(rng: random.Random) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "conversation_id": f"c-{rng.randrange(10**6)}",
            "turn_event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "kind": "rating", "rating": rng.randint(1, 5), "comment": "fine",
            "tenant": "acme", "timestamp": "2026-11-26T10:00:00Z"}


def _chat_completion(rng: random.Random) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": rng.choice(["hi", "What is 2+2?"])}],
            "max_tokens": rng.randint(1, 4), "temperature": 0, "stop": ["\n\n"],
            "metadata": {"topic": "support"}}


def _gateway_feedback(rng: random.Random) -> dict[str, Any]:
    return {"conversation_id": f"c-{rng.randrange(10**6)}",
            "turn_event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "kind": "thumbs_down", "comment": "wrong answer"}


_BASES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "chat_event": _chat_event, "feedback_event": _feedback_event,
    "chat_batch": _chat_event, "feedback_batch": _feedback_event,
    "chat_completion": _chat_completion, "gateway_feedback": _gateway_feedback,
}

# -- hostile values ------------------------------------------------------------------------

_HUGE_INTS = [Raw("9" * 4_301), Raw("-" + "1" * 5_000), Raw("1" * 20_000), Raw("1" * 4_300),
              2**64, -(2**63) - 1, 10**100]
_ODD_NUMBERS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e-400"),
                Raw("1E+99999"), Raw("-0"), Raw("0.0000000000000000000001"), Raw("01"),
                Raw("1."), Raw(".5"), Raw("+1"), Raw("0x10")]
_DATES = ["9999-12-31T23:59:59Z", "2149-06-06T00:00:00Z", "2106-02-07T06:28:16Z",
          "2106-02-07T06:28:15Z", "2100-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
          "1970-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
          "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "2026-11-26T10:00:00",
          "2026-02-30T00:00:00Z", "2026-12-31T23:59:60Z", "10000-01-01T00:00:00Z",
          "2026-11-26", "yesterday", "", "2026-11-26T10:00:00+25:00", "1e10"]
_SURROGATES = [Raw('"\\ud800"'), Raw('"\\udfff"'), Raw('"a\\ud83d"'), Raw('"\\ude00b"'),
               Raw('"\\ud83d\\ude00"'), Raw('"\\udbff\\udfff"'), Raw('"\\u0000"')]
_CONTROLS = ["\x00", "\x01", "\x08", "\x0b", "\x1b[31m", "\x7f", "\x85", "\x9f", "\u2028",
             "\ufeff", "\ufffe", "\U0010ffff", "\u202e", "a\rb", "\t"]
#: Control characters written raw inside a JSON string, which JSON does not allow.
_RAW_CONTROLS = [Raw('"x\x00y"'), Raw('"\x1f"'), Raw('"a\nb"'), Raw('"\x7f\x85"')]
_WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "", " ", [], {}, [1, 2], {"a": 1},
                           "null", "true", "0", [[[]]], {"$ref": "#"}]


def _nested(depth: int, *, kind: str) -> Raw:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    return Raw(opening * depth + "1" + closing * depth)


def _hostile_value(rng: random.Random) -> Any:
    family = rng.randrange(8)
    if family == 0:
        return rng.choice(_HUGE_INTS)
    if family == 1:
        return rng.choice(_ODD_NUMBERS)
    if family == 2:
        return rng.choice(_DATES)
    if family == 3:
        return rng.choice(_SURROGATES)
    if family == 4:
        return "x" + rng.choice(_CONTROLS) + "y" if rng.random() < 0.7 else rng.choice(
            _RAW_CONTROLS)
    if family == 5:
        return _nested(rng.choice([50, 199, 201, 990, 1_000, 5_000]),
                       kind=rng.choice(["list", "dict"]))
    if family == 6:
        return "é" * rng.choice([129, 2_001, 32_001]) if rng.random() < 0.3 else "x" * 129
    return rng.choice(_WRONG_TYPES)


# -- mutations of a whole document ---------------------------------------------------------

def _break_field(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, str]:
    field = rng.choice(sorted(doc) + ["unknown_field", "metadata", "timestamp"])
    value = _hostile_value(rng)
    if field == "metadata" and rng.random() < 0.5:
        value = {rng.choice(["topic", "a\nb", "", "x" * 65, Raw('"\\ud800"')]): value}
    if field == "messages" and rng.random() < 0.7:
        message = {"role": rng.choice(["user", "assistant", "system", "tool", 1]),
                   "content": value}
        value = [message] if rng.random() < 0.5 else [message, {"role": "user",
                                                                "content": "hi"}]
    return {**doc, field: value}, f"field {field}"


def _duplicate_key(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, str]:
    pairs = Pairs(doc.items())
    key = rng.choice(sorted(doc) or ["role"])
    pairs.append((key, _hostile_value(rng)))
    if rng.random() < 0.5:
        pairs.insert(0, (key, "first"))
    return pairs, f"duplicate key {key}"


def _wrong_document(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, str]:
    choices: list[Any] = [[doc], [], "event", 42, None, Raw("[]" * 3), {"events": doc},
                          {"events": []}, {"events": "x"}, {"events": [doc] * 1_001},
                          {"events": [doc, 7, None]}, {"messages": []}, {}]
    return rng.choice(choices), "wrong document"


def _many_keys(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, str]:
    extra = {f"k{i}": i for i in range(rng.choice([100, 10_000]))}
    return {**doc, "metadata": extra} if rng.random() < 0.5 else {**doc, **extra}, "many keys"


def _big(rng: random.Random, doc: dict[str, Any]) -> tuple[Any, str]:
    size = rng.choice([33_000, 200_000, 800_000, 1_100_000])
    field = "messages" if "messages" in doc else "text" if "text" in doc else "comment"
    if field == "messages" and rng.random() < 0.3:
        # Within every field cap: 200 messages of 32,000 characters (6.4 MB).
        value: Any = [{"role": "user", "content": "y" * 32_000}] * 200
    elif field == "messages" and rng.random() < 0.5:
        # Within the body cap, over the prompt cap: 40 messages of 1,000 characters.
        value = [{"role": "user", "content": "y" * 1_000}] * 40
    elif field == "messages":
        value = [{"role": "user", "content": "y" * size}]
    else:
        value = "y" * size
    return {**doc, field: value}, f"big {field}"


_MUTATIONS = [(_break_field, 50), (_duplicate_key, 8), (_wrong_document, 8),
              (_many_keys, 2), (_big, 2)]


def _encode(rng: random.Random, text: str) -> tuple[bytes, str]:
    roll = rng.random()
    if roll < 0.80:
        return text.encode("utf-8", "surrogatepass"), "utf-8"
    encodings: list[tuple[str, Callable[[str], bytes]]] = [
        ("utf-16", lambda t: t.encode("utf-16", "surrogatepass")),
        ("utf-16-le", lambda t: t.encode("utf-16-le", "surrogatepass")),
        ("utf-32", lambda t: t.encode("utf-32", "surrogatepass")),
        ("latin-1", lambda t: t.encode("latin-1", "replace")),
        ("bom", lambda t: b"\xef\xbb\xbf" + t.encode("utf-8", "surrogatepass")),
        ("cesu", lambda t: t.replace("}", '"\ud800"}', 1).encode("utf-8", "surrogatepass")),
        ("overlong", lambda t: t.encode().replace(b'"', b"\xc0\xa2", 1)),
        ("invalid", lambda t: t.encode()[:5] + bytes([rng.randrange(0x80, 0x100)])
         + t.encode()[5:]),
        ("truncated", lambda t: t.encode()[: rng.randrange(max(1, len(t.encode())))]),
        ("empty", lambda t: b""),
        ("whitespace", lambda t: b" \n\t "),
        ("trailing", lambda t: t.encode() + rng.choice([b"x", b"{}", b"\x00", b",", b"]"])),
        ("random", lambda t: rng.randbytes(rng.randrange(1, 300))),
    ]
    name, encode = rng.choice(encodings)
    return encode(text), name


_CONTENT_TYPES = ["application/json", "application/json", "application/json", None,
                  "text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/json; charset=utf-16",
                  "application/octet-stream", "application/json; charset=latin-1", "*/*",
                  "application/json, text/html"]


def _headers(rng: random.Random, key: str) -> tuple[dict[str, str], bool]:
    headers, authorized = {"Authorization": f"Bearer {key}"}, True
    roll = rng.random()
    if roll < 0.04:  # a wrong Bearer does not override a right X-API-Key
        headers, authorized = {"Authorization": "Bearer wrong", "X-API-Key": key}, True
    elif roll < 0.06:
        headers, authorized = {"X-API-Key": key}, True
    elif roll < 0.08:
        headers, authorized = {"Authorization": "Bearer wrong"}, False
    elif roll < 0.09:
        headers, authorized = {"X-API-Key": "wrong"}, False
    elif roll < 0.10:
        headers, authorized = {}, False
    content_type = rng.choice(_CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers, authorized


def hostile_payloads(
    route: Route, *, count: int, seed: int, key: str = "flywheel-dev-key"
) -> Iterator[Payload]:
    """`count` hostile requests for a route kind; the same ones for the same seed."""
    rng = random.Random(f"{seed}:{route}")
    base = _BASES[route]
    mutations, weights = zip(*_MUTATIONS, strict=True)
    for _ in range(count):
        doc: Any = base(rng)
        labels = []
        if rng.random() < 0.08:
            labels.append("valid")
        else:
            for _ in range(rng.choice([1, 1, 1, 2])):
                if not isinstance(doc, dict):
                    break
                mutate = rng.choices(mutations, weights)[0]
                doc, label = mutate(rng, doc)
                labels.append(label)
        if route.endswith("_batch") and isinstance(doc, dict) and "events" not in doc:
            doc = {"events": [doc, *(_BASES[route](rng) for _ in range(rng.randrange(3)))]}
        body, encoding = _encode(rng, _dump(doc))
        headers, authorized = _headers(rng, key)
        yield Payload(body, headers, authorized,
                      f"{' + '.join(labels)} / {encoding} / {headers.get('Content-Type')}")
