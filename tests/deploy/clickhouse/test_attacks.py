"""The embedded ClickHouse front, attacked as issue 16 found it open: each test is one hole.

Each runs against a server of its own (`own_server`), so limits can be tightened and
the server's memory read from /proc without the session stack's traffic in it.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from deploy.clickhouse.passwords import password_file, stored_password
from deploy.settings import ClickHouseUser
from tests.deploy.clickhouse.conftest import OwnServer, admin_auth

pytestmark = pytest.mark.integration


def analyst(server: OwnServer) -> httpx.BasicAuth:
    return httpx.BasicAuth("analyst", stored_password(server.settings.state_path, "analyst"))


def raw_exchange(server: OwnServer, payload: bytes, *, read_s: float = 2.0) -> bytes:
    """Send raw bytes on one connection and read whatever comes back for `read_s`."""
    ch = server.settings.clickhouse
    with socket.create_connection((ch.host, ch.port), timeout=read_s) as sock:
        sock.sendall(payload)
        received = b""
        deadline = time.monotonic() + read_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    return received


def rss_peak_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_the_generated_passwords_are_private_files(own_server: Callable[..., OwnServer]) -> None:
    server = own_server()
    server.start()
    for user in ("default", "analyst"):
        path = password_file(server.settings.state_path, user)
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(path.read_text().strip()) >= 24
    assert password_file(server.settings.state_path, "x").parent.stat().st_mode & 0o777 == 0o700


def test_no_account_writes_a_file_with_into_outfile(
    own_server: Callable[..., OwnServer], tmp_path: Path
) -> None:
    server = own_server()
    server.start()
    target = tmp_path / "written.txt"
    query = f"SELECT 'x' INTO OUTFILE '{target}' APPEND FORMAT TSVRaw"
    anonymous = httpx.get(server.url, params={"query": query})
    as_analyst = httpx.post(server.url, content=query, auth=analyst(server))
    as_admin = httpx.post(server.url, content=query, auth=admin_auth(server.settings))
    hidden = httpx.post(server.url, auth=admin_auth(server.settings),
                        content=f"/* */ select 'x' -- c\n into   outfile '{target}'")
    in_values = httpx.post(server.url, auth=admin_auth(server.settings),
                           content="CREATE TABLE t (a UInt8) ENGINE = Memory")
    in_values = httpx.post(server.url, auth=admin_auth(server.settings),
                           content=f"INSERT INTO t VALUES (1); SELECT 1 INTO OUTFILE '{target}'")
    assert anonymous.status_code == 403 and anonymous.headers["X-ClickHouse-Exception-Code"] \
        == "516"
    for refused in (as_analyst, as_admin, hidden):
        assert refused.status_code == 403, refused.text
        assert refused.headers["X-ClickHouse-Exception-Code"] == "497"
        assert "INTO OUTFILE" in refused.text
    assert in_values.status_code in (200, 400)
    assert not target.exists()


def test_into_outfile_writes_only_under_the_configured_folder(
    own_server: Callable[..., OwnServer], tmp_path: Path
) -> None:
    allowed = tmp_path / "exports"
    allowed.mkdir()
    server = own_server(into_outfile_dir=allowed)
    server.start()
    inside = httpx.post(server.url, auth=admin_auth(server.settings),
                        content=f"SELECT 42 INTO OUTFILE '{allowed / 'a.tsv'}' FORMAT TSV")
    outside = httpx.post(server.url, auth=admin_auth(server.settings),
                         content=f"SELECT 42 INTO OUTFILE '{allowed}/../b.tsv' FORMAT TSV")
    by_analyst = httpx.post(server.url, auth=analyst(server),
                            content=f"SELECT 42 INTO OUTFILE '{allowed / 'c.tsv'}' FORMAT TSV")
    assert inside.status_code == 200, inside.text
    assert (allowed / "a.tsv").read_text() == "42\n"
    assert outside.status_code == 403 and not (tmp_path / "b.tsv").exists()
    assert by_analyst.status_code == 403 and not (allowed / "c.tsv").exists()


def test_no_credentials_or_another_scheme_is_never_the_admin(
    own_server: Callable[..., OwnServer]
) -> None:
    server = own_server()
    server.start()
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Digest x"},
                    {"Authorization": "Basic !!!"}):
        response = httpx.post(server.url, content="CREATE TABLE z (a UInt8) ENGINE = Memory",
                              headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert response.headers["X-ClickHouse-Exception-Code"] == "516"
    assert httpx.post(server.url, content="EXISTS TABLE z",
                      auth=admin_auth(server.settings)).text == "0\n"
    metrics = httpx.get(f"{server.url}/metrics").text
    failures = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("flywheel_clickhouse_http_auth_failures_total{")]
    assert sum(failures) == 4
    for i in range(20):  # made-up names do not each get a metric series
        httpx.post(server.url, content="SELECT 1", auth=(f"nobody{i}", "x"))
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'auth_failures_total{user="(unknown)"} 20.0' in metrics
    assert "nobody" not in metrics
    log = (server.settings.state_path / "clickhouse.log").read_text()
    assert "authentication failed for user 'default'" in log
    assert stored_password(server.settings.state_path, "default") not in log


def test_the_analyst_cannot_kill_stop_merges_or_read_other_users_work(
    own_server: Callable[..., OwnServer]
) -> None:
    server = own_server()
    server.start()
    long_query: list[httpx.Response] = []
    admin = threading.Thread(target=lambda: long_query.append(httpx.post(
        server.url, content="SELECT sleep(2), 'admin-done'", auth=admin_auth(server.settings),
        timeout=30)))
    admin.start()
    time.sleep(0.5)
    attempts = {
        "KILL QUERY WHERE 1": "164", "SYSTEM STOP MERGES": "164", "SYSTEM STOP TTL MERGES": "164",
        "SELECT query FROM system.processes": "497", "SHOW PROCESSLIST": "497",
        "SELECT path FROM system.disks": "497", "SELECT file('/etc/hostname')": "497",
        "SELECT * FROM view(SELECT * FROM system.processes)": "497",
        "SELECT * FROM merge('system', '^proc')": "497",
        "SELECT 1 WHERE 1 IN (SELECT 1 FROM system.processes)": "497",
        "DROP TABLE IF EXISTS anything": "164",
        "SELECT 1; KILL QUERY WHERE 1": "62",
    }
    for sql, code in attempts.items():
        response = httpx.post(server.url, content=sql, auth=analyst(server))
        assert response.headers.get("X-ClickHouse-Exception-Code") == code, (sql, response.text)
        assert response.status_code < 500, (sql, response.status_code)
    admin.join()
    assert long_query[0].text == "0\tadmin-done\n"
    # What the analyst may read still works.
    ok = httpx.post(server.url, content="SELECT count() > 0 FROM system.tables",
                    auth=analyst(server))
    assert ok.text == "1\n"


def test_an_analyst_query_is_bounded_and_cannot_lift_its_limits(
    own_server: Callable[..., OwnServer]
) -> None:
    users = [ClickHouseUser(name="default"),
             ClickHouseUser(name="analyst", readonly=True, max_execution_time_s=1,
                            max_result_rows=100)]
    server = own_server(users=users)
    server.start()
    slow = httpx.post(server.url, auth=analyst(server), timeout=30,
                      content="SELECT count() FROM numbers(100000000000) WHERE sipHash64(number)=1")
    assert slow.headers.get("X-ClickHouse-Exception-Code") == "159", slow.text[:200]
    lifted = httpx.post(server.url, auth=analyst(server), params={"max_execution_time": "0"},
                        content="SELECT 1")
    assert lifted.headers.get("X-ClickHouse-Exception-Code") == "164"
    rows = httpx.post(server.url, auth=analyst(server), content="SELECT * FROM numbers(1000)")
    assert rows.headers.get("X-ClickHouse-Exception-Code") == "396", rows.text[:200]


def test_an_account_runs_at_most_its_concurrent_queries(
    own_server: Callable[..., OwnServer]
) -> None:
    users = [ClickHouseUser(name="default"),
             ClickHouseUser(name="analyst", readonly=True, max_concurrent_queries=2)]
    server = own_server(users=users)
    server.start()
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def slow() -> None:
        response = httpx.post(server.url, auth=analyst(server), timeout=30,
                              content="SELECT sleep(2)")
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    admin = httpx.post(server.url, auth=admin_auth(server.settings), content="SELECT 7")
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 503, 503], [r.text[:100] for r in answers]
    assert all(r.headers["X-ClickHouse-Exception-Code"] == "202" for r in answers
               if r.status_code == 503)
    assert admin.text == "7\n"  # another account is not held up


def test_a_query_stops_when_its_client_goes_away(own_server: Callable[..., OwnServer]) -> None:
    server = own_server()
    server.start()
    auth = admin_auth(server.settings)
    marker = "gone_client_marker_7"
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.5) as client:
        client.post(server.url, auth=auth, content=f"SELECT '{marker}', count() FROM "
                    "numbers(100000000000) WHERE sipHash64(number) = 1")
    deadline = time.monotonic() + 20
    running = "1"
    while time.monotonic() < deadline:
        running = httpx.post(server.url, auth=auth, content=(
            f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
            "AND query NOT LIKE '%system.processes%'")).text.strip()
        if running == "0":
            break
        time.sleep(0.5)
    assert running == "0", "the query kept running after its client left"


def test_idle_and_slow_sockets_neither_starve_queries_nor_live_forever(
    own_server: Callable[..., OwnServer]
) -> None:
    server = own_server(header_timeout_s=2.0)
    server.start()
    ch = server.settings.clickhouse
    idle = [socket.create_connection((ch.host, ch.port)) for _ in range(200)]
    slow = socket.create_connection((ch.host, ch.port), timeout=10)
    try:
        slow.sendall(b"GET /ping HTTP/1.1\r\n")
        answered = []
        with httpx.Client(auth=admin_auth(server.settings), timeout=10) as client:
            for _ in range(60):
                answered.append(client.post(server.url, content="SELECT 1").status_code)
        assert answered == [200] * 60
        # Trickle one header byte a second: the head deadline closes it anyway.
        closed_at = None
        started = time.monotonic()
        for _ in range(15):
            try:
                slow.sendall(b"X")
            except OSError:
                closed_at = time.monotonic() - started
                break
            time.sleep(1)
            slow.settimeout(0.01)
            try:
                if slow.recv(1) == b"":
                    closed_at = time.monotonic() - started
                    break
            except (TimeoutError, BlockingIOError):
                pass
        assert closed_at is not None, "a slow header kept its connection open"
        # The silent ones are closed too.
        time.sleep(1)
        idle[0].settimeout(2)
        assert idle[0].recv(1) == b""
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "flywheel_clickhouse_http_timed_out_connections_total" in metrics
    finally:
        for sock in [*idle, slow]:
            sock.close()


def test_a_gzip_bomb_is_refused_with_memory_bounded(own_server: Callable[..., OwnServer]) -> None:
    server = own_server(max_body_size_bytes=64 << 20)
    server.start()
    assert server.process is not None
    auth = admin_auth(server.settings)
    httpx.post(server.url, auth=auth, content="CREATE TABLE b (s String) ENGINE = Memory")
    before = rss_peak_bytes(server.process.pid)
    bomb = gzip.compress(b"INSERT INTO b FORMAT TSV\n" + b"a" * (640 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20
    response = httpx.post(server.url, auth=auth, content=bomb,
                          headers={"Content-Encoding": "gzip"}, timeout=60)
    assert response.status_code == 413, response.text[:200]
    grown = rss_peak_bytes(server.process.pid) - before
    # Refused at the 64 MiB cap: the engine holds what it was given of the one huge
    # row, but the 640 MiB are never inflated whole (the old front held all of them).
    assert grown < 512 << 20, f"the server grew by {grown >> 20} MiB for a 640 MiB bomb"
    assert httpx.post(server.url, auth=auth, content="SELECT count() FROM b").text == "0\n"


def test_a_body_after_an_early_answer_never_runs_as_a_request(
    own_server: Callable[..., OwnServer]
) -> None:
    server = own_server()
    server.start()
    smuggled = b"GET /?query=CREATE+TABLE+smuggled+(a+UInt8)+ENGINE=Memory HTTP/1.1\r\n\r\n"
    for head in (b"POST /nope HTTP/1.1\r\nHost: x\r\n",  # 404
                 b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n"):  # 403
        payload = head + b"Content-Length: " + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled
        answer = raw_exchange(server, payload)
        assert answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    exists = httpx.post(server.url, auth=admin_auth(server.settings), content="EXISTS smuggled")
    assert exists.text == "0\n"


@pytest.mark.parametrize("framing", [
    b"Content-Length: 8\r\nContent-Length: 9\r\n\r\nSELECT 1",
    b"Content-Length: -1\r\n\r\nSELECT 1",
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nSELECT 1\r\n0\r\n\r\n",
])
def test_malformed_framing_is_a_400_and_never_runs(
    own_server: Callable[..., OwnServer], framing: bytes
) -> None:
    server = own_server()
    server.start()
    answer = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\n" + framing)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_fifty_concurrent_clients_are_all_answered(own_server: Callable[..., OwnServer]) -> None:
    server = own_server()
    server.start()
    auth = admin_auth(server.settings)
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(auth=auth, timeout=60) as c:
            for _ in range(20):
                code = c.post(server.url, content="SELECT 1").status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 1000
