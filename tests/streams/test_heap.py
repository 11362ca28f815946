"""`settle_after_loading`: loaded objects leave collections, new garbage is still collected.

Run in a child process: freezing and re-tuning the collector would otherwise change it
for the rest of the test session.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, weakref
from streams.heap import YOUNG_THRESHOLD, settle_after_loading

class Node:
    pass

loaded = [Node() for _ in range(1000)]
settle_after_loading()
assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle only the collector can free
alive = weakref.ref(a)
del a, b
gc.collect()
assert alive() is None, "a cycle made after settling was not collected"
print("ok")
"""


def test_settling_freezes_what_is_loaded_and_still_collects_new_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
