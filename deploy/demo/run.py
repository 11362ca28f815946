"""The demo's phases, in order, within the time budget.

1. the stack, the demo's database and topics;
2. the base model (built once, cached) served as version 1 by the Flywheel services;
3. simulated users on the old topics until the trainer publishes, and the controller
   serves, version 2;
4. the traffic shifts to the new topics (at a window boundary, so each training window
   holds one kind of traffic): the embedding-drift alert fires through Prometheus and
   Alertmanager, the trainer retrains on the drifted window, version 3 is served, and
   the alert resolves;
5. the traffic stops and every replayed event is found in the warehouse, and every text
   column of every table is scanned for raw private data (`streams.pii_scan`);
6. perplexity per version on held-out old and new pairs, and the report.

Every wait is bounded by what is left of `demo.time_budget_s` (not counting the one-time
build of the base model); a phase that cannot finish in time ends the run with a
`DemoTimeoutError` naming the phase and what it waited for.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from deploy.demo.accounting import Accounting, end_offsets, wait_until_landed
from deploy.demo.plan import DemoPlan, base_config, demo_settings
from deploy.demo.traffic import Phase, Sample, Traffic
from deploy.demo.users import split_topics
from deploy.demo.versions import VersionPerplexity, perplexities
from deploy.errors import StackError
from streams.pii_scan import ScanReport, scan_warehouse

if TYPE_CHECKING:
    from deploy.local.supervisor import Supervisor
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)



class DemoTimeoutError(StackError):
    """A demo phase did not finish within the time budget."""


class DemoUI(Protocol):
    """How the run shows progress; the CLI draws it with rich, tests print nothing."""

    def phase(self, name: str) -> None: ...

    def progress(self, what: str, done: int, total: int) -> None: ...

    def status(self, line: str) -> None: ...

    def note(self, line: str) -> None: ...


class QuietUI:
    """A DemoUI that logs notes and nothing else."""

    def phase(self, name: str) -> None:
        logger.info("demo phase: %s", name)

    def progress(self, what: str, done: int, total: int) -> None:
        pass

    def status(self, line: str) -> None:
        pass

    def note(self, line: str) -> None:
        logger.info("demo: %s", line)


@dataclass
class DemoOutcome:
    """What a run did and measured; `problems` lists every check that failed."""

    plan: DemoPlan
    started_at: datetime
    phases_s: dict[str, float] = field(default_factory=dict)
    marks: dict[str, datetime] = field(default_factory=dict)
    served: list[tuple[int, datetime]] = field(default_factory=list)
    chats: int = 0
    failed_requests: list[tuple[float, str]] = field(default_factory=list)
    feedback: dict[str, int] = field(default_factory=dict)
    hostile: dict[str, int] = field(default_factory=dict)
    hostile_rejected: int = 0
    accounting: Accounting | None = None
    #: Rows of any table holding raw private data after the run (`streams.pii_scan`).
    private_data: ScanReport | None = None
    perplexity: list[VersionPerplexity] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    drift_alert: str = ""
    report_path: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class DemoRunner:
    """Runs one demo; `run` returns its outcome, `stop` interrupts it from another thread."""

    def __init__(self, settings: FlywheelSettings, plan: DemoPlan, *, ui: DemoUI | None = None
                 ) -> None:
        self.user_settings = settings
        self.plan = plan
        self.settings = demo_settings(settings, plan)
        self.ui = ui or QuietUI()
        self.old = split_topics(settings.demo.old_topics)
        self.new = split_topics(settings.demo.new_topics)
        self._deadline = 0.0
        self._apps: Supervisor | None = None
        self._traffic: Traffic | None = None
        self._reader: Any = None  # one read-only ClickHouse client for every poll
        self.outcome = DemoOutcome(plan, datetime.now(UTC))

    # -- the run -----------------------------------------------------------------------

    def run(self) -> DemoOutcome:
        """Every phase in order; the services stay up unless `demo.keep_running` is off.

        Raises:
            DemoTimeoutError: a phase did not finish within the time budget.
            StackError: a service could not start.
        """
        self._deadline = time.monotonic() + self.plan.time_budget_s
        try:
            with self._timed("stack"):
                self._bring_up_stack()
            with self._timed("base model"):
                self._build_base()
            with self._timed("services"):
                self._start_services()
            start_offsets = end_offsets(self.settings)
            with self._timed("old topics"):
                self._old_topics()
            with self._timed("traffic shift"):
                self._shift()
            self._stop_traffic()
            with self._timed("accounting"):
                self._account(start_offsets)
            with self._timed("private-data scan"):
                self._scan_private_data()
            with self._timed("evaluation"):
                self._evaluate_versions()
            self._check()
        finally:
            self._stop_traffic()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        return self.outcome

    def stop_everything(self) -> None:
        """Stop the traffic and every process the demo started (Ctrl-C, the end of a test)."""
        self._stop_traffic()
        from deploy.local.stack import build_apps_supervisor, build_stack

        build_apps_supervisor(self.settings).down()
        build_stack(self.user_settings).down()

    # -- phases ------------------------------------------------------------------------

    def _bring_up_stack(self) -> None:
        from deploy.clickhouse.client import get_client
        from deploy.local.stack import build_stack
        from deploy.warehouse import migrate
        from streams.topics import ensure_topics

        self.ui.phase("bringing the stack up")
        build_stack(self.user_settings).up(
            progress=lambda name, message: self.ui.status(f"{name}: {message}"))
        admin = get_client(self.settings, database="default")
        try:
            admin.command(f"DROP DATABASE IF EXISTS {self.settings.clickhouse.database}")
            migrate(admin, self.settings)
        finally:
            admin.close()
        ensure_topics(self.settings)

    def _build_base(self) -> None:
        from trainer.bootstrap import bootstrap

        self.ui.phase("building the base model (once; cached)")
        result = bootstrap(self.plan.base_path,
                           config=base_config(self.user_settings, quick=self.plan.quick),
                           progress=self.ui.progress)
        self.ui.note(f"base model: {result.parameters:,} parameters, held-out perplexity "
                     f"{result.heldout_perplexity:.1f}" + (" (cached)" if result.reused else
                                                           f", built in {result.seconds:.0f} s"))
        # The first run builds the base once; the budget is for the loop itself.
        self._deadline += result.seconds

    def _start_services(self) -> None:
        from deploy.local.stack import build_apps_supervisor
        from trainer.publish import prepare_repository

        self.ui.phase(f"serving {self.plan.model} version 1 and starting Flywheel's services")
        self._apps = build_apps_supervisor(self.settings)
        # Services of an earlier run would serve its model; they restart with this run's.
        self._apps.down()
        self._remove_old_models()
        prepare_repository(self.settings)
        self._write_config()
        self._apps.up(progress=lambda name, message: self.ui.status(f"{name}: {message}"))
        self._wait("version 1 answering", lambda: self._live_version() == 1, timeout_s=180)
        self.outcome.served.append((1, datetime.now(UTC)))

    def config_path(self) -> Path:
        """A TOML file pointing the CLI at this run: `flywheel --config PATH status`."""
        return self.settings.state_path / "demo" / self.plan.run_id / "flywheel.toml"

    def _write_config(self) -> None:
        # Only what the demo changed that on-call commands need to find its data.
        path = self.config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        path.write_text(
            f"# Settings of demo run {self.plan.run_id}, for `flywheel --config {path} ...`\n"
            f'state_dir = "{s.state_path}"\n\n[model]\nname = "{s.model.name}"\n'
            f'base_model_path = "{s.base_model_path()}"\n\n'
            f'[clickhouse]\ndatabase = "{s.clickhouse.database}"\n', encoding="utf-8")

    def _old_topics(self) -> None:
        self.ui.phase("users on the old topics; waiting for the trainer to publish version 2")
        phase = Phase("old", self.old.asked)
        self._traffic = Traffic(self.settings, phase, seed=1)
        self._traffic.start()
        self.outcome.marks["traffic_started"] = datetime.now(UTC)
        self._wait("version 2 serving", lambda: self._live_version() >= 2)
        self._note_served()

    def _shift(self) -> None:
        assert self._traffic is not None
        window_s = self.settings.trainer.window_s
        boundary = (time.time() // window_s + 1) * window_s
        self.ui.phase("waiting for a window boundary to shift the traffic")
        self._wait("the next window boundary", lambda: time.time() >= boundary)
        self._traffic.phase.set("new", self.new.asked)
        shifted = datetime.now(UTC)
        self.outcome.marks["shift"] = shifted
        self.ui.phase("traffic shifted to new topics; waiting for the drift alert")
        # Whichever input-drift alert fires first (embedding or feature drift) asks the
        # trainer to retrain; that one must then resolve.
        fired: list[str] = []

        def drift_fired() -> bool:
            fired[:] = self._alerts_since(shifted, "firing")
            return bool(fired)

        self._wait("an input-drift alert firing", drift_fired)
        self.outcome.drift_alert = fired[0]
        self.outcome.marks["drift_fired"] = datetime.now(UTC)
        self.ui.phase(f"{fired[0]} firing; waiting for the retrained version 3")
        self._wait("version 3 serving", lambda: self._live_version() >= 3)
        self._note_served()
        self.ui.phase(f"version 3 serving; waiting for {fired[0]} to resolve")
        self._wait(f"{fired[0]} resolved",
                   lambda: fired[0] in self._alerts_since(shifted, "resolved"))
        self.outcome.marks["drift_resolved"] = datetime.now(UTC)

    def _stop_traffic(self) -> None:
        traffic, self._traffic = self._traffic, None
        if traffic is None:
            return
        traffic.stop()
        stats = traffic.stats
        with stats.lock:
            self.outcome.chats = len(stats.chats)
            self.outcome.failed_requests = list(stats.failures)
            self.outcome.feedback = dict(stats.feedback)
            self.outcome.hostile = dict(stats.hostile)
            self.outcome.hostile_rejected = stats.hostile_rejected
            self.outcome.samples = list(stats.chats)
        self.outcome.marks["traffic_stopped"] = datetime.now(UTC)

    def _account(self, start_offsets: dict[tuple[str, int], int]) -> None:
        self.ui.phase("accounting for every replayed event")
        self.outcome.accounting = wait_until_landed(
            self._client(), start=start_offsets, end=end_offsets(self.settings),
            since=self.outcome.started_at, timeout_s=min(120.0, self._left()),
            expected_rejected=self.outcome.hostile_rejected,
            on_poll=lambda a: self.ui.status(
                f"{a.curated + a.quarantined + a.errors:,} of {a.records:,} records landed"))

    def _scan_private_data(self) -> None:
        self.ui.phase("scanning every table for raw private data")
        self.outcome.private_data = scan_warehouse(
            self._client(), database=self.settings.clickhouse.database)

    def _evaluate_versions(self) -> None:
        self.ui.phase("perplexity of each version on held-out old and new topics")
        versions = sorted({v for v, _ in self.outcome.served})
        self.outcome.perplexity = perplexities(self.settings, old=self.old.held_out,
                                               new=self.new.held_out, versions=versions)

    def _check(self) -> None:
        o = self.outcome
        served = {v for v, _ in o.served}
        if not {2, 3} <= served:
            o.problems.append(f"versions served: {sorted(served)}; expected 1, 2 and 3")
        if o.failed_requests:
            o.problems.append(f"{len(o.failed_requests)} gateway requests failed, first: "
                              f"{o.failed_requests[0][1]}")
        if o.accounting is None or not o.accounting.balanced:
            o.problems.append(f"replayed events not all accounted for: {o.accounting}")
        elif o.accounting.rejected_bodies_quarantined < o.hostile_rejected:
            o.problems.append(
                f"{o.hostile_rejected} bodies rejected by the ingest API, only "
                f"{o.accounting.rejected_bodies_quarantined} found in quarantine")
        if o.private_data is not None and o.private_data.raw_rows:
            o.problems.append(f"{o.private_data.raw_rows} rows hold raw private data: " + ", "
                              .join(f"{leak.table}.{leak.column} ({leak.rows})"
                                    for leak in o.private_data.leaks))
        by_version = {p.version: p for p in o.perplexity}
        if 1 in by_version and 3 in by_version:
            if not by_version[3].new_topics < by_version[1].new_topics:
                o.problems.append(
                    f"version 3's perplexity on the new topics ({by_version[3].new_topics:.1f})"
                    f" is not below version 1's ({by_version[1].new_topics:.1f})")

    # -- helpers -----------------------------------------------------------------------

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.outcome.phases_s[name] = time.monotonic() - started

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    def _wait(self, what: str, done: Callable[[], bool], *, timeout_s: float | None = None,
              poll_s: float = 1.0) -> None:
        limit = min(timeout_s or self._left(), self._left())
        deadline = time.monotonic() + limit
        while True:
            try:
                if done():
                    return
            except Exception as e:  # a service answering late is retried, not fatal
                logger.debug("demo: checking %r failed: %s", what, e)
            if time.monotonic() > deadline:
                raise DemoTimeoutError(
                    f"waited {limit:.0f} s for {what}{self._last_verdict()} and the time budget "
                    f"(demo.time_budget_s={self.plan.time_budget_s:.0f}) is spent; "
                    "`flywheel status`, `flywheel stack logs SERVICE` and `flywheel apps "
                    "logs PROCESS` (trainer-watch: each evaluation and why it was not "
                    "published) show where it stopped, or raise "
                    "FLYWHEEL_DEMO__TIME_BUDGET_S on a busy machine")
            self.ui.status(self._status_line(what))
            time.sleep(poll_s)

    def _status_line(self, waiting_for: str) -> str:
        line = f"waiting for {waiting_for}"
        if self._traffic is not None:
            s = self._traffic.stats.snapshot()
            versions = ", ".join(f"v{v}: {n}" for v, n in sorted(s["versions"].items()))
            line += (f" | {s['chats']:,} chats ({versions}) | {s['failed']} failed | "
                     f"{s['feedback']:,} feedback | {s['hostile']:,} hostile")
        return line + f" | {max(0.0, self._left()):.0f} s of budget left"

    def _live_version(self) -> int:
        from inference.routing import read_routing

        routing = read_routing(self.settings.triton_model_repository(), self.settings.model.name)
        return routing.live if routing else 0

    def _note_served(self) -> None:
        live = self._live_version()
        if live not in {v for v, _ in self.outcome.served}:
            self.outcome.served.append((live, datetime.now(UTC)))
            self.ui.note(f"version {live} is serving")

    def _last_verdict(self) -> str:
        """"; the last evaluation (at HH:MM:SS): REASON", or "" when there is none to read."""
        from monitoring.status import last_evaluation

        try:
            row = last_evaluation(self._client(), self.settings.model.name)
        except Exception as e:  # the error being raised matters more than this detail
            logger.debug("demo: reading the last evaluation failed: %s", e)
            return ""
        if row is None:
            return "; the trainer has evaluated nothing yet"
        verdict = "published" if row["passed"] else "not published"
        return (f"; the last evaluation (at {row['evaluated_at']:%H:%M:%S} UTC): "
                f"{verdict}: {row['reason']}")

    def _alerts_since(self, since: datetime, status: str) -> list[str]:
        """Names of input-drift alerts with `status` that started after `since`."""
        from monitoring.actions import RETRAIN_ALERTS

        rows = self._client().query(
            "SELECT name FROM alerts FINAL WHERE name IN {n:Array(String)} AND status = "
            "{s:String} AND starts_at >= {since:DateTime64(3, 'UTC')} ORDER BY received_at",
            parameters={"n": sorted(RETRAIN_ALERTS), "s": status, "since": since},
        ).result_rows
        return [r[0] for r in rows]

    def _client(self) -> Any:
        """The run's read-only ClickHouse client, opened on first use (closed by `run`)."""
        if self._reader is None:
            from deploy.clickhouse.client import get_client

            self._reader = get_client(self.settings, readonly=True)
        return self._reader

    def _remove_old_models(self) -> None:
        """Unload and delete the models of earlier demo runs (never other models)."""
        import tritonclient.grpc as grpcclient

        repo = self.settings.triton_model_repository()
        prefix = f"{self.user_settings.demo.model_prefix}-"
        old = [p for p in repo.glob(f"{prefix}*") if p.is_dir() and p.name != self.plan.model]
        if not old:
            return
        client = grpcclient.InferenceServerClient(self.settings.triton.grpc_address)
        try:
            for path in old:
                try:
                    client.unload_model(path.name)
                except Exception as e:  # not loaded, or Triton forgot it: fine either way
                    logger.debug("unloading %s: %s", path.name, e)
                shutil.rmtree(path, ignore_errors=True)
        finally:
            client.close()

