"""The stateless stages of a batch, split across processes and put back in order.

`PreparePool.prepare(records)` cuts a batch into `processes + 1` contiguous slices, sends
all but the last to pool processes (each runs its own `Preparer`), prepares the last
slice in this process meanwhile, and returns the items in the records' order. The
stateful decisions, the sink and the offset commits stay in the worker's loop, so
commit-after-insert and per-partition order are unchanged: the pool only makes the
worker's batch finish sooner.

Processes are spawned (not forked): the worker's Kafka clients run librdkafka threads,
which a fork would copy in an undefined state.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from streams.errors import WorkerError
from streams.heap import settle_after_loading
from streams.prepare import Prepared, Preparer
from streams.rows import Record

if TYPE_CHECKING:
    from deploy.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: Slices smaller than this are prepared here: shipping them costs more than it saves.
MIN_SLICE_RECORDS = 50

_preparer: Preparer | None = None  # one per pool process, built by its initializer


def _start_process(options: StreamsSettings, chat_topic: str, feedback_topic: str) -> None:
    global _preparer
    # Ctrl-C reaches the whole process group; the worker stops its pool itself, after
    # flushing, so a helper must not die first with a batch in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preparer = Preparer(options, chat_topic=chat_topic, feedback_topic=feedback_topic)
    _preparer.warm_up()
    settle_after_loading()


def _prepare_slice(records: list[Record]) -> list[Prepared]:
    assert _preparer is not None, "pool process started without its initializer"
    return _preparer.prepare(records)


class PreparePool:
    """`Preparer.prepare` over a batch, with `processes` helper processes.

    Args:
        processes: helper processes (1 or more); this process prepares a slice too.
    """

    def __init__(self, options: StreamsSettings, *, chat_topic: str, feedback_topic: str,
                 processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1 (got {processes}); "
                             "use a plain Preparer for none")
        self._options = options
        self._topics = (chat_topic, feedback_topic)
        self._processes = processes
        self._local = Preparer(options, chat_topic=chat_topic, feedback_topic=feedback_topic)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> PreparePool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Start the processes and wait until each has loaded its models.

        Raises:
            WorkerError: a pool process failed to start.
        """
        if self._executor is not None:
            return
        self._executor = ProcessPoolExecutor(
            self._processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process, initargs=(self._options, *self._topics))
        self._local.warm_up()
        try:  # one empty job per process, so that models load now, not in the first batch
            for future in [self._executor.submit(_prepare_slice, [])
                           for _ in range(self._processes)]:
                future.result()
        except BrokenProcessPool as e:
            self.close()
            raise WorkerError(f"a stream pool process failed to start ({e}); see its "
                              "traceback above, or set streams.workers_processes=0") from e

    def close(self) -> None:
        """Stop the processes (pending slices are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def prepare(self, records: list[Record]) -> list[Prepared]:
        """One `Prepared` per record, in order, as `Preparer.prepare` gives it.

        Raises:
            WorkerError: a pool process died; the batch's offsets must not be committed.
        """
        if self._executor is None:
            raise WorkerError("PreparePool.prepare before open(); use it as a context manager")
        slices = min(self._processes + 1, max(1, len(records) // MIN_SLICE_RECORDS))
        if slices == 1:
            return self._local.prepare(records)
        size = -(-len(records) // slices)
        parts = [records[i:i + size] for i in range(0, len(records), size)]
        futures: list[Future[list[Prepared]]] = [
            self._executor.submit(_prepare_slice, part) for part in parts[:-1]]
        out: list[Prepared] = []
        last = self._local.prepare(parts[-1])
        try:
            for future in futures:
                out.extend(future.result())
        except BrokenProcessPool as e:
            raise WorkerError(f"a stream pool process died ({e}); the batch was not "
                              "committed and a restarted worker reprocesses it") from e
        out.extend(last)
        return out
