"""Golden tests: testdata/in-*.yaml config -> out-*.yaml rules (sloth's layout).

Regenerate after an intended change:
`RMSWATCH_REGENERATE=1 pytest tests/generators/test_rules.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rmswatch.config import load_config
from rmswatch.generators.rules import dump, rules_document

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(TESTDATA.glob("in-*.yaml"))


@pytest.mark.parametrize("source", CASES, ids=[p.stem for p in CASES])
def test_rules_match_the_golden_file(source: Path) -> None:
    golden = source.with_name(source.name.replace("in-", "out-", 1))
    text = dump(rules_document(load_config(source)))
    if os.environ.get("RMSWATCH_REGENERATE") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_a_one_hour_slo_scales_its_windows() -> None:
    rules = yaml.safe_load((TESTDATA / "out-demo-hour.yaml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    # 1h/5m/6h/30m/1d/2h/3d/6h scaled by 1h/30d, whole seconds
    assert "rmswatch_slo:sli_error:ratio_rate5s" in records
    assert "rmswatch_slo:sli_error:ratio_rate6m" in records
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert "GradNormVarianceOutOfRange" not in {a["alert"] for a in alerts}
    divergence = next(a for a in alerts if a["alert"] == "TrainingLossDivergence")
    assert divergence["for"] == "2m" and "> 5 *" in divergence["expr"]
