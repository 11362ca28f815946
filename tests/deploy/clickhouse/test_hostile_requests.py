"""Seeded hostile requests at the ClickHouse front: no 5xx for bad input, and it stays up.

A generator mixes what breaks parsers: bodies of random bytes, invalid UTF-8 and lone
surrogates (percent-encoded into the URL too), control characters, deep nesting,
huge numbers and impossible dates, truncated or mislabelled compression, multipart
garbage, bad credentials and settings. Every answer must be a 4xx or a 200, never a
5xx, and the server must answer a normal query after each batch.
"""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.deploy.clickhouse.conftest import OwnServer, admin_auth

pytestmark = pytest.mark.integration

REQUESTS = int(os.environ.get("FLYWHEEL_HOSTILE_CLICKHOUSE_REQUESTS", "1500"))

FRAGMENTS = [
    "SELECT ", "1", "(", ")", ",", "'", "\\", "`", '"', "FROM ", "numbers(3)", "system.one",
    "WHERE ", "1e999999", "99999999999999999999999999999999999999", "-0", "nan", "inf",
    "toDate('9999-99-99')", "toDateTime('0000-00-00 25:61:61')", "parseDateTime64BestEffort('x')",
    "CAST(", " AS UInt8)", "[", "]", "{", "}", "{x:UInt8}", "FORMAT ", "JSONEachRow", "Native",
    "SETTINGS max_threads=", "; ", "-- c\n", "/*", "*/", "\x00", "\x1b[31m", "\u202e", "\ufeff",
    "ünïcödé", "🚀", "INSERT INTO x VALUES ", "INTO OUTFILE '/tmp/fuzz'", "UNION ALL ",
    "arrayJoin(range(10))", "repeat('a', 1000)", "sleep(0)", "throwIf(1)", "intDiv(1, 0)",
]


def sql_text(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.15:
        depth = rnd.choice([10, 500, 5000, 50000])
        return "SELECT " + "(" * depth + "1" + ")" * rnd.choice([depth, depth - 1, 0])
    if kind < 0.25:
        return "SELECT " + "+".join(["1"] * rnd.choice([10, 10000]))
    return "".join(rnd.choice(FRAGMENTS) for _ in range(rnd.randint(1, 25)))


def body(rnd: random.Random) -> tuple[bytes, dict[str, str]]:
    kind = rnd.random()
    headers: dict[str, str] = {}
    if kind < 0.2:
        data = rnd.randbytes(rnd.choice([1, 100, 10_000, 300_000]))
    elif kind < 0.3:
        data = sql_text(rnd).encode("utf-8", "surrogatepass")  # lone surrogates as bytes
        data += b"\xed\xa0\x80" + b"\xff\xfe"
    else:
        data = sql_text(rnd).encode("utf-8", "surrogatepass")
    encoding = rnd.random()
    if encoding < 0.1:
        headers["Content-Encoding"] = rnd.choice(["gzip", "deflate", "zstd", "lz4", "br", "xz",
                                                  "gzip, br", "identity", "\u00e9"])
        if rnd.random() < 0.5:
            data = gzip.compress(data)[: rnd.randint(1, 40)]
    elif encoding < 0.15:
        headers["Content-Encoding"] = "gzip"
        data = gzip.compress(data)
    elif encoding < 0.2:
        headers["Content-Type"] = "multipart/form-data; boundary=" + rnd.choice(["x", "", "\""])
    return data, headers


def params(rnd: random.Random) -> dict[str, str]:
    out: dict[str, str] = {}
    for _ in range(rnd.randint(0, 4)):
        key = rnd.choice(["query", "database", "default_format", "session_id",
                          "session_timeout", "max_threads", "readonly", "compress",
                          "decompress", "enable_http_compression", "http_zlib_compression_level",
                          "param_x", "wait_end_of_query", "query_id", "external_structure",
                          "bad setting", "\u00e9\u00e9", "x" * 300])
        value = rnd.choice(["1", "0", "-1", "", "9" * 40, "JSON", "Native", "nope", "system",
                            "`", "a\x00b", "\ud800", "1e309", sql_text(rnd)])
        out[key] = value
    return out


def hostile_requests(seed: int, n: int) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    for _ in range(n):
        data, headers = body(rnd)
        request: dict[str, Any] = {
            "method": rnd.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "HEAD"]),
            "path": rnd.choice(["/", "/", "/", "/query", "/ping", "/x", "/%ff", "/..%2f"]),
            "params": params(rnd),
            "content": data,
            "headers": headers,
        }
        who = rnd.random()
        if who < 0.1:
            request["headers"]["Authorization"] = rnd.choice(
                ["Basic", "Basic =", "Bearer x", "Basic " + "A" * 5000, "Basic ZGVmYXVsdA=="])
        elif who < 0.15:
            request["headers"]["X-ClickHouse-User"] = "\u00e9" * 10
        elif who < 0.2:
            request["noauth"] = True
        yield request


def send(client: httpx.Client, server: OwnServer, request: dict[str, Any]) -> httpx.Response:
    auth = None if request.get("noauth") or "Authorization" in request["headers"] \
        else admin_auth(server.settings)
    safe_params = {k.encode("utf-8", "surrogatepass").decode("utf-8", "replace"):
                   v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                   for k, v in request["params"].items()}
    headers = {k: v.encode("utf-8", "surrogatepass")  # raw bytes on the wire
               for k, v in request["headers"].items()}
    return client.request(request["method"], server.url + request["path"], params=safe_params,
                          content=request["content"], headers=headers, auth=auth)


def test_hostile_requests_never_get_a_5xx_and_the_server_stays_up(
    own_server: Callable[..., OwnServer]
) -> None:
    server = own_server(max_body_size_bytes=4 << 20)
    server.start()
    assert server.process is not None
    five_hundreds = []
    with httpx.Client(timeout=30) as client:
        for i, request in enumerate(hostile_requests(seed=16, n=REQUESTS)):
            try:
                response = send(client, server, request)
            except httpx.InvalidURL:
                continue  # httpx refuses to send it at all (a URL over 64 KiB)
            except httpx.RemoteProtocolError:
                continue  # the server refused the framing and closed: not an answer
            if response.status_code >= 500:
                five_hundreds.append((request["method"], request["path"],
                                      str(request["params"])[:120], request["content"][:120],
                                      response.status_code, response.text[:300]))
            if i % 250 == 0:
                assert server.process.poll() is None, "the server died"
                ok = client.post(server.url, content="SELECT 1", auth=admin_auth(server.settings))
                assert ok.text == "1\n"
    assert server.process.poll() is None
    assert not five_hundreds, five_hundreds[:5]
