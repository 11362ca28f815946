"""Replay: a share of the base's corpus mixed into a window, never the regression set."""

from __future__ import annotations

import pytest

from trainer.corpus import regression_pairs
from trainer.packing import TextExample
from trainer.replay import replay_pool, with_replay

WINDOW = [TextExample(f"Why was I charged {i} dollars?", f"Your plan costs {i}.")
          for i in range(60)]


@pytest.mark.parametrize(("share", "replayed"), [(0.2, 15), (0.5, 60), (0.75, 180)])
def test_replayed_pairs_make_up_the_share_of_the_mix(share: float, replayed: int) -> None:
    mixed = with_replay(WINDOW, share=share, seed=0)
    assert len(mixed) == len(WINDOW) + replayed
    assert set(WINDOW) <= set(mixed)


def test_replay_never_draws_from_the_regression_set() -> None:
    held = {(p.prompt, p.response) for p in regression_pairs()}
    assert held and not held & {(p.prompt, p.response) for p in replay_pool()}
    mixed = with_replay(WINDOW, share=0.75, seed=1)
    assert not held & {(e.prompt, e.target) for e in mixed}


def test_replay_is_seeded_and_off_at_share_zero() -> None:
    assert with_replay(WINDOW, share=0.5, seed=3) == with_replay(WINDOW, share=0.5, seed=3)
    assert with_replay(WINDOW, share=0.5, seed=3) != with_replay(WINDOW, share=0.5, seed=4)
    assert with_replay(WINDOW, share=0.0, seed=3) is WINDOW


def test_a_share_of_one_or_more_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="trainer.replay_share"):
        with_replay(WINDOW, share=1.0, seed=0)
