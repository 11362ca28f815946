"""Each marker line in the demo report's time plots carries its own label."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib import dates as mdates  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from deploy.demo.plan import DemoPlan  # noqa: E402
from deploy.demo.report import _marks  # noqa: E402
from deploy.demo.run import DemoOutcome  # noqa: E402


def test_every_event_label_sits_on_its_own_line():
    start = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    plan = DemoPlan(quick=True, run_id="r", model="m", base_path=Path("."), window_s=60,
                    min_new_examples=1, train_steps=1, learning_rate=1e-3, time_budget_s=60)
    outcome = DemoOutcome(plan=plan, started_at=start)
    outcome.served = [(1, start), (2, start + timedelta(minutes=2)),
                      (3, start + timedelta(minutes=9))]
    outcome.marks = {"shift": start + timedelta(minutes=4),
                     "drift_fired": start + timedelta(minutes=5),
                     "drift_resolved": start + timedelta(minutes=11)}
    figure, ax = plt.subplots()
    try:
        _marks(ax, outcome)
        where = {text.get_text(): text.xy[0] for text in ax.texts}
    finally:
        plt.close(figure)

    expected = {"v2 serving": outcome.served[1][1], "v3 serving": outcome.served[2][1],
                "traffic shift": outcome.marks["shift"],
                "drift alert": outcome.marks["drift_fired"],
                "alert resolved": outcome.marks["drift_resolved"]}
    assert set(where) == set(expected)
    for label, at in expected.items():
        x = where[label]
        x = mdates.date2num(x) if isinstance(x, datetime) else x
        assert x == mdates.date2num(at), label
