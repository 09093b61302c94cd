"""Assemble BENCHMARKS.md from each area's results page (benchmarks/results/*.md).

Each benchmark script prints a section; the engineer who ran it pastes the output and the exact
command into benchmarks/results/<area>.md. This script puts them in one page in a fixed order:

    python benchmarks/assemble.py            # writes BENCHMARKS.md
    python benchmarks/assemble.py --check    # exits 1 when BENCHMARKS.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("hooks", "prometheus", "store", "alerting", "incidents", "app")
HEADER = """# Benchmarks

Speed is measured here, never asserted in tests. Every benchmark runs its variants side by side
in one process or one interleaved run and reports medians of several runs and ratios, so that
the comparisons hold even when the machine's absolute speed wanders. Machine: the project's
reference box, 2 x86-64 cores and 24 GiB, no GPU, Python 3.11, torch 2.13.0 (CPU),
PostgreSQL 15 on 127.0.0.1. Each section names the command that produced it.

| area | what is measured |
|---|---|
| trainer hooks | ms/step: bare vs default (budget), every=1, every=10, TensorBoard, W&B; memory |
| Prometheus | `/metrics` scrape time, 1,000-tensor model, cardinality guard on/off |
| store | ingest rate into SQLite and PostgreSQL, 50 layers per record |
| alerting | one evaluation tick, 1,000 series x 30 days of 1-minute history |
| incidents | labelled corpus of real trainings: recall, false pages/tickets, time to detect |
| app | a 1,000,000-step run: page server time and peak memory |

"""


def render() -> str:
    parts = [HEADER]
    for area in ORDER:
        page = ROOT / "benchmarks" / "results" / f"{area}.md"
        parts.append(page.read_text(encoding="utf-8").strip() + "\n\n")
    return "".join(parts).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    target = ROOT / "BENCHMARKS.md"
    text = render()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print("BENCHMARKS.md is stale: run python benchmarks/assemble.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
