"""Config and SLO-spec loading: defaults as data, OpenSLO subset, and bad input named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmswatch.alerting.slo_files import load_slo_file
from rmswatch.alerting.spec import burn_policy, default_slos, effective_slos
from rmswatch.config import ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_default_slos_and_windows_come_from_the_data_files() -> None:
    names = [s.name for s in default_slos()]
    assert names == [
        "retrain-success", "nonfinite-free-steps", "step-latency", "checkpoint-success",
        "validation-improvement",
    ]  # fmt: skip
    page = [(w.long, w.short, w.factor) for w in burn_policy().windows if w.severity == "page"]
    assert page == [(3600, 300, 14.4), (21600, 1800, 6)]


def test_windows_scale_with_the_slo_period() -> None:
    one_hour = burn_policy().scaled(3600)
    assert one_hour[0].long == pytest.approx(5.0)  # 1h * (1h / 30d)
    assert one_hour[0].factor == 14.4


def test_health_overrides_merge_with_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yml", "health:\n  divergence:\n    factor: 5\n"))
    assert config.health.divergence.factor == 5
    assert config.health.divergence.consecutive_steps == 10
    assert config.health.stalled.after == 600


def test_a_config_slo_replaces_the_default_of_the_same_name(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path / "c.yml",
            "slos:\n  - name: retrain-success\n    sli: {kind: retrain_success}\n"
            "    objective: 99\n    period: 7d\n",
        )
    )
    slos = {s.name: s for s in effective_slos(config.slos)}
    assert slos["retrain-success"].objective == 99
    assert slos["retrain-success"].period == 7 * 86400
    assert len(slos) == 5


def test_openslo_v1_file_is_read_as_the_same_concepts(tmp_path: Path) -> None:
    slo_file = write(
        tmp_path / "nan.yml",
        """
apiVersion: openslo/v1
kind: SLO
metadata: {name: nan-free}
spec:
  service: resnet-*
  budgetingMethod: Occurrences
  timeWindow: [{duration: 7d, isRolling: true}]
  indicator:
    metadata: {name: nan-free-steps}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: rmswatch, spec: {counter: finite_steps}}}
        total: {metricSource: {type: rmswatch, spec: {counter: steps}}}
  objectives: [{target: 0.999}]
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: drift}
spec:
  indicator:
    metadata: {name: drift}
    spec:
      ratioMetric:
        good: {metricSource: {spec: {counter: predictions_ok}}}
        total: {metricSource: {spec: {counter: predictions}}}
  objectives: [{targetPercent: 99}]
""",
    )
    config = load_config(write(tmp_path / "c.yml", "evaluation:\n  slo_files: [nan.yml]\n"))
    by_name = {s.name: s for s in config.slos}
    assert slo_file.exists()
    assert by_name["nan-free"].sli.kind == "nonfinite_free_steps"
    assert by_name["nan-free"].objective == pytest.approx(99.9)
    assert by_name["nan-free"].period == 7 * 86400
    assert by_name["nan-free"].applies_to("resnet-retrain")
    assert not by_name["nan-free"].applies_to("bert")
    assert by_name["drift"].sli.kind == "ratio"
    assert (by_name["drift"].sli.good, by_name["drift"].sli.total) == (
        "predictions_ok",
        "predictions",
    )


@pytest.mark.parametrize(
    ("text", "key", "accepted"),
    [
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: 99\n    burn: 2\n",
         "slos.0.burn", "unknown key"),
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: fast\n",
         "slos.0.objective", "valid number"),
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: 100\n",
         "slos.0.objective", "percentage in (0, 100)"),
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: 0\n",
         "slos.0.objective", "percentage in (0, 100)"),
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: 0.999\n",
         "slos.0.objective", "write 99.9"),
        ("slos:\n  - name: a\n    sli: {kind: latency}\n    objective: 99\n",
         "slos.0.sli.kind", "retrain_success"),
        ("slos:\n  - name: a\n    sli: {kind: step_latency}\n    objective: 99\n",
         "slos.0.sli", "threshold_seconds is required"),
        ("slos:\n  - name: a\n    sli: {kind: retrain_success}\n    objective: 99\n"
         "    period: soon\n",
         "slos.0.period", "30s, 5m, 1h, 30d"),
        ("health:\n  stalled:\n    after: 10 minutes\n", "health.stalled.after", "5m"),
        ("health:\n  divergence:\n    factr: 3\n", "health.divergence.factr", "unknown key"),
        ("evaluation:\n  runbook_base_url: wiki/runbooks\n", "evaluation.runbook_base_url",
         "http://"),
    ],
)  # fmt: skip
def test_bad_config_is_rejected_naming_file_key_and_what_is_accepted(
    tmp_path: Path, text: str, key: str, accepted: str
) -> None:
    path = write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert accepted in message


def test_a_bad_slo_file_is_named_rather_than_the_config(tmp_path: Path) -> None:
    write(tmp_path / "slos.yml", "slos:\n  - name: x\n    sli: {kind: ratio}\n    objective: 99\n")
    config = write(tmp_path / "c.yml", "evaluation:\n  slo_files: [slos.yml]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.path == str(tmp_path / "slos.yml")
    assert "slos.0.sli" in str(caught.value) and "good and total" in str(caught.value)


def test_openslo_with_a_ratio_target_out_of_range_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path / "o.yml",
        "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  indicator:\n"
        "    metadata: {name: a}\n    spec:\n      ratioMetric:\n"
        "        good: {metricSource: {spec: {counter: steps}}}\n"
        "        total: {metricSource: {spec: {counter: steps}}}\n"
        "  objectives: [{target: 99.9}]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_slo_file(path)
    assert "spec.objectives.0.target" in str(caught.value)
    assert "less than 1" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key", "accepted"),
    [
        ("receivers:\n  - {name: oncall, url: 'http://127.0.0.1:9099/hook'}\n"
         "route: {receiver: pager}\n", "pager", "oncall"),
        ("receivers:\n  - {name: oncall, url: 'not a url'}\n", "receivers.0.url", "http"),
        ("server:\n  external_url: rmswatch.example\n", "server.external_url", "http"),
    ],
)  # fmt: skip
def test_unknown_receiver_and_malformed_urls_are_rejected_at_load(
    tmp_path: Path, text: str, key: str, accepted: str
) -> None:
    path = write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and key in message and accepted in message
