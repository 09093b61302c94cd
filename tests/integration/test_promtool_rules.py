"""Generated Prometheus rules pass promtool, their tests fire and stay quiet, and the Python
evaluator and promtool agree on the same synthetic series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rmswatch.alerting import prom_names as m
from rmswatch.alerting.evaluate import evaluate
from rmswatch.config import Config, load_config
from rmswatch.generators.rules import dump, promtool_tests_document, rules_document
from tests.alerting.slo_store import add_run, add_steps, new_store
from tests.helpers import REPO_ROOT, require_program, subprocess_env

pytestmark = pytest.mark.integration
CHECKED_IN = REPO_ROOT / "dashboards" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = require_program("promtool")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_writes_rules_that_promtool_checks_and_tests(tmp_path: Path) -> None:
    config = tmp_path / "rmswatch.yml"
    config.write_text("health:\n  stalled: {after: 5m}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "rules", "--config", str(config),
         "-o", str(tmp_path / "rules.yml"), "--tests-output", str(tmp_path / "rules.test.yml")],
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load((tmp_path / "rules.test.yml").read_text())
    firing = {t["alert_rule_test"][0]["alertname"] for t in tests["tests"]
              if t["alert_rule_test"][0]["exp_alerts"]}  # fmt: skip
    quiet = {t["alert_rule_test"][0]["alertname"] for t in tests["tests"]
             if not t["alert_rule_test"][0]["exp_alerts"]}  # fmt: skip
    assert firing == quiet  # every alert is shown firing and staying quiet
    assert len(firing) == 8  # SloErrorBudgetBurn and the 7 health alerts


def test_promtool_tests_fail_when_a_threshold_is_wrong(tmp_path: Path) -> None:
    rules = dump(rules_document(Config())).replace("> 0\n", "> 1000\n")
    (tmp_path / "rules.yml").write_text(rules, encoding="utf-8")
    (tmp_path / "rules.test.yml").write_text(dump(promtool_tests_document(Config(), "rules.yml")))
    tested = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "TrainingNonFinite" in tested.stdout + tested.stderr


def test_checked_in_rules_are_current() -> None:
    assert (CHECKED_IN / "rules.yml").read_text() == dump(rules_document(Config())), (
        "regenerate with `make docs`"
    )
    expected_tests = dump(promtool_tests_document(Config(), "rules.yml"))
    assert (CHECKED_IN / "rules.test.yml").read_text() == expected_tests
    tested = promtool("test", "rules", "rules.test.yml", cwd=CHECKED_IN)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("bad_per_minute", [0, 1, 3, 30])
def test_python_evaluator_and_promtool_agree_on_the_same_series(
    tmp_path: Path, sqlite_url: str, bad_per_minute: int
) -> None:
    """100 steps a minute for 7h, `bad_per_minute` of them with a NaN, from minute 300 on."""
    minutes, start_bad = 420, 300
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1", job="retrain", started=0.0)
    rows, total, bad = [], [0.0], [0.0]
    for minute in range(1, minutes + 1):
        nan_now = bad_per_minute if minute > start_bad else 0
        # the minute's steps land in (minute-1, minute]: the same minute Prometheus sees
        rows += [
            {"step": minute * 100 + i, "time": minute * 60.0 - 0.5 - i * 0.5,
             "nonfinite_loss": 1 if i < nan_now else 0, "step_seconds": 0.1}
            for i in range(100)
        ]  # fmt: skip
        total.append(total[-1] + 100)
        bad.append(bad[-1] + int(nan_now))
    add_steps(engine, pk, rows)
    nan_free = {"name": "nan-free", "sli": {"kind": "nonfinite_free_steps"}, "objective": 99.9}
    config = Config.model_validate({"evaluation": {"default_slos": False}, "slos": [nan_free]})
    signals = evaluate(engine, config, minutes * 60.0)
    python_firing = sorted(
        s.severity for s in signals if s.alertname == "SloErrorBudgetBurn" and s.active
    )
    document = rules_document(config)
    (tmp_path / "rules.yml").write_text(dump(document))
    labels = '{job="retrain", run_id="r1"}'
    alerts = {a["labels"]["severity"]: a for g in document["groups"] for a in g["rules"]
              if a.get("alert") == "SloErrorBudgetBurn"}  # fmt: skip
    expected = []
    for severity in python_firing:
        exp_labels = {"severity": severity, "slo": "nan-free", "job": "retrain"}
        annotations = {k: v.replace("{{ $labels.job }}", "retrain")
                       for k, v in alerts[severity]["annotations"].items()}  # fmt: skip
        expected.append({"exp_labels": exp_labels, "exp_annotations": annotations})
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"{m.TELEMETRY_STEPS_COUNT}{labels}",
                 "values": " ".join(map(str, total))},
                {"series": f"{m.NONFINITE_STEPS_TOTAL}{labels}",
                 "values": " ".join(map(str, bad))},
            ],
            "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": "SloErrorBudgetBurn",
                                 "exp_alerts": expected}],
        }],
    }  # fmt: skip
    (tmp_path / "agree.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    tested = promtool("test", "rules", "agree.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, f"python fired {python_firing}\n{tested.stdout}{tested.stderr}"


def test_a_latency_threshold_prometheus_cannot_count_is_refused_naming_the_buckets(
    tmp_path: Path,
) -> None:
    config = tmp_path / "rmswatch.yml"
    config.write_text(
        "slos:\n  - name: step-latency\n    sli: {kind: step_latency, threshold_seconds: 2}\n"
        "    objective: 99\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "rules", "--config", str(config)],
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "slos.step-latency.sli.threshold_seconds" in result.stderr
    assert "2.5" in result.stderr


GOLDEN = sorted((REPO_ROOT / "tests" / "generators" / "testdata").glob("in-*.yaml"))


@pytest.mark.parametrize("source", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_configs_rules_pass_their_promtool_tests(tmp_path: Path, source: Path) -> None:
    """Short periods (1h, 1d) included: their tests sample at the scrape interval, so a window
    shorter than a few scrapes would leave the page silent and fail here."""
    config = load_config(source)
    (tmp_path / "rules.yml").write_text(dump(rules_document(config)))
    tests = promtool_tests_document(config, "rules.yml")
    (tmp_path / "rules.test.yml").write_text(dump(tests))
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    pages = [
        t for t in tests["tests"] for a in t["alert_rule_test"] for e in a["exp_alerts"]
        if a["alertname"] == "SloErrorBudgetBurn" and e["exp_labels"]["severity"] == "page"
    ]  # fmt: skip
    assert pages, "every golden SLO shows its page firing"


def test_a_one_hour_slo_burning_at_500x_pages_at_a_15s_scrape(tmp_path: Path) -> None:
    hour = {"name": "hour", "sli": {"kind": "nonfinite_free_steps"}, "objective": 99.9,
            "period": "1h", "min_events": 20}  # fmt: skip
    config = Config.model_validate({"evaluation": {"default_slos": False}, "slos": [hour]})
    (tmp_path / "rules.yml").write_text(dump(rules_document(config)))
    labels = '{job="retrain", run_id="r1"}'
    # 40 steps a scrape (160/min) for 30 minutes, half of them NaN: 500x a 0.1% budget
    total = " ".join(str(40 * i) for i in range(121))
    bad = " ".join(str(20 * i) for i in range(121))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": f"{m.TELEMETRY_STEPS_COUNT}{labels}", "values": total},
                {"series": f"{m.NONFINITE_STEPS_TOTAL}{labels}", "values": bad},
            ],
            "promql_expr_test": [{
                "expr": 'count by (severity) (ALERTS{alertname="SloErrorBudgetBurn"})',
                "eval_time": "30m",
                "exp_samples": [{"labels": '{severity="page"}', "value": 1},
                                {"labels": '{severity="ticket"}', "value": 1}],
            }],
        }],
    }  # fmt: skip
    (tmp_path / "burn.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    tested = promtool("test", "rules", "burn.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
