"""Which version gave each recent answer, so feedback can be counted per version."""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID


class RecentAnswers:
    """The answering version of the last `max_entries` answers, oldest forgotten first.

    Feedback usually follows an answer within minutes; an answer rated after it was
    forgotten is still recorded as a FeedbackEvent, only not counted for a canary.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._versions: OrderedDict[UUID, str] = OrderedDict()
        self._max_entries = max_entries

    def remember(self, turn_event_id: UUID, version: str) -> None:
        self._versions[turn_event_id] = version
        if len(self._versions) > self._max_entries:
            self._versions.popitem(last=False)

    def version_of(self, turn_event_id: UUID) -> str | None:
        return self._versions.get(turn_event_id)
