"""Golden tests: testdata/in-*.yaml config -> out-*.yaml rules (sloth's layout).

Regenerate after an intended change:
`RMSWATCH_REGENERATE=1 pytest tests/generators/test_rules.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmswatch.config import Config, load_config
from rmswatch.generators.rules import dump, fillable_window, rules_document

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(TESTDATA.glob("in-*.yaml"))


@pytest.mark.parametrize("source", CASES, ids=[p.stem for p in CASES])
def test_rules_match_the_golden_file(source: Path) -> None:
    golden = source.with_name(source.name.replace("in-", "out-", 1))
    text = dump(rules_document(load_config(source)))
    if os.environ.get("RMSWATCH_REGENERATE") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def records_and_alerts(name: str) -> tuple[set[str], list[dict[str, Any]]]:
    rules = yaml.safe_load((TESTDATA / f"out-{name}.yaml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    return records, alerts


def test_a_one_hour_slo_gets_windows_a_15s_scrape_can_fill() -> None:
    records, alerts = records_and_alerts("demo-hour")
    # 1h/5m/6h/30m/1d/2h/3d/6h scaled by 1h/30d = 5s/0.4s/30s/2.5s/2m/10s/6m/30s: under the
    # 1m floor (4 x 15s) they become 1m; above it, whole minutes
    windows = {r.rsplit("rate", 1)[1] for r in records if ":ratio_rate" in r}
    assert windows == {"1m", "2m", "6m"}
    assert "GradNormVarianceOutOfRange" not in {a["alert"] for a in alerts}
    divergence = next(a for a in alerts if a["alert"] == "TrainingLossDivergence")
    assert divergence["for"] == "2m" and "> 5 *" in divergence["expr"]


def test_a_pair_collapsed_onto_one_window_alerts_on_it_alone_and_says_so() -> None:
    _, alerts = records_and_alerts("short-hour")
    page = next(a for a in alerts if a["labels"].get("severity") == "page")
    ticket = next(a for a in alerts if a["labels"].get("severity") == "ticket")
    assert page["expr"].count("sli_error:ratio_rate1m") == 2  # one per pair, no short clause
    assert "too short for a multiwindow pair" in page["annotations"]["windows"]
    assert "1m window floor (4 scrapes)" in page["annotations"]["windows"]
    assert "ratio_rate6m" in ticket["expr"] and "ratio_rate1m" in ticket["expr"]
    assert "windows" not in ticket["annotations"]  # 2m/1m and 6m/1m are still pairs


def test_the_floor_follows_the_configured_scrape_interval() -> None:
    records, _ = records_and_alerts("short-day")
    windows = {r.rsplit("rate", 1)[1] for r in records if ":ratio_rate" in r}
    # 1d: 2m/10s, 12m/1m, 48m/4m, 144m/12m; floor 4 x 30s = 2m
    assert windows == {"2m", "4m", "12m", "48m", "144m"}


@pytest.mark.parametrize(
    ("seconds", "floor", "expected"),
    [(5, 60, 60), (60, 60, 60), (70, 60, 60), (100, 60, 120), (150, 120, 180), (130, 80, 120)],
)
def test_windows_are_floored_then_rounded_to_whole_minutes(
    seconds: float, floor: float, expected: float
) -> None:
    assert fillable_window(seconds, floor) == expected


def test_a_30_day_period_keeps_the_policy_windows() -> None:
    document = rules_document(Config())
    records = {r["record"] for g in document["groups"] for r in g["rules"] if "record" in r}
    windows = {r.rsplit("rate", 1)[1] for r in records if ":ratio_rate" in r}
    assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
