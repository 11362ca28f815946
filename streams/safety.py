"""Stage 2: toxicity, identity attacks, stereotyped generalizations, and balance caps.

Toxicity comes from `alt-profanity-check`, a linear model shipped inside the package
(nothing is downloaded at run time); it is scored a whole batch at a time. Identity
attacks and stereotypes are phrase rules over the protected groups and terms in
`settings.streams`, so policy people change them without a code change. Caps keep any
one topic, tenant or identity group from taking more than `cap_share` of a window.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.platform import ReasonCode
from streams import toxicity

if TYPE_CHECKING:
    from deploy.settings import StreamsSettings


def toxicity_scores(texts: Sequence[str], *, tokens: Sequence[list[str]] | None = None
                    ) -> list[float]:
    """Probability that each text is toxic (0..1), scored in one batch (`streams.toxicity`).

    Args:
        tokens: `\\w+` runs of each lowercased text, when the caller has them already.
    """
    return toxicity.scores(texts, tokens=tokens)


def _alternation(terms: Sequence[str]) -> str:
    ordered = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
    return "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in ordered)


@dataclass(frozen=True)
class SafetyVerdict:
    """What the safety rules found in one text."""

    reasons: tuple[ReasonCode, ...]
    scores: dict[str, float]
    group: str
    detail: str = ""


class SafetyFilter:
    """Applies the toxicity threshold and the identity rules of `settings.streams`."""

    def __init__(self, options: StreamsSettings) -> None:
        self._threshold = options.toxicity_threshold
        groups = _alternation(options.protected_groups)
        # Every word of a group, for a cheap test that a text can mention none of them.
        self._group_words: dict[str, list[tuple[str, ...]]] = {}
        self._group_always = False
        for term in options.protected_groups:
            group_words = tuple(re.findall(r"\w+", term.lower()))
            if group_words:  # keyed by its last word: "people" is rarer than "the"
                self._group_words.setdefault(group_words[-1], []).append(group_words)
            elif term.strip():
                self._group_always = True
        self._group = re.compile(rf"\b(?:{groups})\b", re.I)
        attacks = _alternation(options.attack_terms)
        traits = _alternation(options.stereotype_terms)
        # A group within the same sentence as an attack phrase, either order.
        self._attack = re.compile(
            rf"\b(?P<g1>{groups})\b[^.!?\n]{{0,60}}?\b(?:{attacks})\b"
            rf"|\b(?:{attacks})\b[^.!?\n]{{0,30}}?\b(?P<g2>{groups})\b",
            re.I,
        )
        # "all X are lazy", "X are always lazy", "X are naturally bad at", "X can't drive".
        self._stereotype = re.compile(
            rf"\b(?:all|every|most|typical)?\s*(?P<g>{groups})\s+(?:are|is|were)\s+"
            rf"(?:all\s+|always\s+|just\s+|so\s+|naturally\s+|inherently\s+|generally\s+|"
            rf"basically\s+|simply\s+|too\s+|more\s+|very\s+)*(?:{traits})\b"
            rf"|\b(?P<g3>{groups})\s+(?:always|never|all|naturally)\s+(?:{traits})\b"
            rf"|\b(?P<g4>{groups})\s+(?:{traits})\b",
            re.I,
        )

    def is_group_key(self, word: str) -> bool:
        """Whether `word` (lowercase) is the word `group_of` keys a protected group by.

        `group_of` with words none of which is a key answers `none`, for any text.
        """
        return word in self._group_words

    def group_of(self, text: str, *, words: Sequence[str] | None = None) -> str:
        """The first protected group the text mentions, lowercase, or `none`.

        Args:
            words: the `\\w+` runs of the lowercased ASCII text, when the caller has them;
                a text lacking some word of every group skips the regex.
        """
        if words is not None and not self._group_always:
            keys = self._group_words.keys() & words
            present = set(words) if keys else set()
            if not any(all(w in present for w in group)
                       for key in keys for group in self._group_words[key]):
                return "none"
        match = self._group.search(text)
        return " ".join(match.group().lower().split()) if match else "none"

    def judge(self, text: str, toxicity: float, *, words: Sequence[str] | None = None
              ) -> SafetyVerdict:
        """Reason codes (most important first) and scores for one cleaned text.

        Args:
            words: as for `group_of`.
        """
        scores = {"toxicity": round(toxicity, 4)}
        reasons: list[ReasonCode] = []
        details: list[str] = []
        group = self.group_of(text, words=words)
        attack = self._attack.search(text) if group != "none" else None
        if attack or (group != "none" and toxicity >= self._threshold):
            reasons.append(ReasonCode.IDENTITY_ATTACK)
            details.append(f"attack on a protected group ({group})")
            scores["identity_attack"] = 1.0
        stereotype = self._stereotype.search(text) if group != "none" else None
        if stereotype:
            reasons.append(ReasonCode.BIASED)
            details.append(f"generalization about a protected group ({group})")
            scores["stereotype"] = 1.0
        if toxicity >= self._threshold:
            reasons.append(ReasonCode.TOXIC)
            details.append(f"toxicity {toxicity:.2f} >= threshold {self._threshold:.2f}")
        return SafetyVerdict(tuple(reasons), scores, group, "; ".join(details))


#: The value a record has in a dimension it does not carry (no topic in its metadata, no
#: protected group mentioned): never capped, since it is not one value but many unknowns.
UNLABELLED = "none"


@dataclass
class BalanceCaps:
    """Per-window caps so no topic, tenant or identity group dominates the curated data.

    The window is tumbling and wall-clock based. A record is refused when, in some
    dimension, its value already holds `share` of the window; three rules keep the caps
    from starving ordinary traffic:

    - Until the window holds `min_records`, nothing is capped (a small window says
      nothing about balance).
    - `UNLABELLED` is never capped. Turns with no `topic` in their metadata are stored
      under topic `general`, but the pipeline passes `UNLABELLED` here: otherwise a client
      that sends no topic (the gateway, most SDK users) would lose everything over
      `share` of its traffic to a cap meant for a topic crowding out others.
    - A dimension with one value in the window is not capped: with nothing to crowd out
      (a single-tenant deployment, a stream of one topic), a cap would only drop data.
      The cap applies from the moment a second value appears.
    """

    window_s: float
    share: float
    min_records: int
    clock: Callable[[], float] = time.monotonic
    _started: float = field(default=-1.0, init=False)
    _total: int = field(default=0, init=False)
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter, init=False)
    _values: Counter[str] = field(default_factory=Counter, init=False)  # distinct per dimension

    def admit(self, keys: dict[str, str]) -> str | None:
        """Count a record in, or return the dimension (e.g. `tenant`) whose cap it breaks."""
        self._roll()
        if self._total >= self.min_records:
            limit = self.share * (self._total + 1)
            for dimension, value in keys.items():
                if (value != UNLABELLED and self._values[dimension] > 1
                        and self._counts[(dimension, value)] + 1 > limit):
                    return dimension
        self._count(keys)
        return None

    def count(self, keys: dict[str, str]) -> None:
        """Count in a record admitted before (a replay after a restart), without checking."""
        self._roll()
        self._count(keys)

    def _roll(self) -> None:
        now = self.clock()
        if self._started < 0 or now - self._started >= self.window_s:
            self._started, self._total = now, 0
            self._counts.clear()
            self._values.clear()

    def _count(self, keys: dict[str, str]) -> None:
        self._total += 1
        for dimension, value in keys.items():
            if value == UNLABELLED:
                continue
            if self._counts[(dimension, value)] == 0:
                self._values[dimension] += 1
            self._counts[(dimension, value)] += 1
