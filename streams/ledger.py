"""Reading the stream ledger: what a previous run decided for each record it landed.

The sink writes one `stream_ledger` row per record before its other rows (`streams.sink`).
A worker that takes over partitions (after a crash, a rebalance, or a broker outage that
cost it its partitions) reads the ledger from the committed offsets on, and each replayed
record gets its logged outcome again (`streams.pipeline`).
"""

from __future__ import annotations

import logging
from typing import Any

from streams.pipeline import Logged

logger = logging.getLogger(__name__)


def logged_outcomes(client: Any, *, database: str, starts: dict[tuple[str, int], int]
                    ) -> dict[tuple[str, int], dict[int, Logged]]:
    """Per (topic, partition), the outcomes logged from its start offset on, by offset.

    One query for every partition (a rebalance can hand over dozens).

    Raises:
        clickhouse_connect's errors: the warehouse did not answer.
    """
    logged: dict[tuple[str, int], dict[int, Logged]] = {key: {} for key in starts}
    if not starts:
        return logged
    keys = list(starts)
    rows = client.query(
        f"SELECT source_topic, source_partition, source_offset, outcome, reason "
        f"FROM {database}.stream_ledger FINAL "
        "WHERE (source_topic, source_partition) IN {keys:Array(Tuple(String, UInt32))} "
        "AND source_offset >= {starts:Array(UInt64)}"
        "[indexOf({keys:Array(Tuple(String, UInt32))}, (source_topic, source_partition))]",
        parameters={"keys": keys, "starts": [starts[k] for k in keys]}).result_rows
    for topic, partition, offset, outcome, reason in rows:
        logged[(topic, int(partition))][int(offset)] = Logged(outcome, reason)
    for (topic, partition), offsets in logged.items():
        if offsets:
            logger.info("%s[%d]: %d records from offset %d have a logged outcome; their "
                        "replay follows it", topic, partition, len(offsets),
                        starts[(topic, partition)])
    return logged
