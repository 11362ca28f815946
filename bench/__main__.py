"""Run every benchmark: `.venv/bin/python -m bench`."""

from __future__ import annotations

import importlib
import sys

MODULES = ["bench.bench_stack", "bench.bench_clickhouse"]

for name in MODULES:
    print(f"== {name}")
    module = importlib.import_module(name)
    sys.argv = [name]
    module.main()
