"""Prometheus recording + alerting rules (and promtool tests) from the config (`rmswatch rules`).

The same SLO specs, burn-rate windows and health rules the built-in evaluator uses become
sloth-style recording rules (error ratio and event count per window) and alerts with the same
names and labels, so Alertmanager sees what `rmswatch serve` would have raised. Output sticks to
PromQL that Prometheus 2.42's promtool accepts. (About 430 lines: the promtool test cases stay
beside the rules because each is derived from the alert it tests.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from rmswatch._validation import parse_duration
from rmswatch.alerting import prom_names as m
from rmswatch.alerting.spec import BurnWindow, SloSpec, burn_policy, effective_slos, format_duration
from rmswatch.alerting.texts import RULE_ALERTNAMES, RULE_DESCRIPTIONS, SLO_ALERTNAME
from rmswatch.config import Config, runbook_url

# Prometheus has no step axis: the step-count windows of the health rules become these durations
PROM_WINDOWS = {
    "nonfinite": "5m",
    "divergence_recent": "5m",
    "divergence_median": "1h",
    "validation_recent": "30m",
    "validation_history": "2h",
    "grad_norm_window": "10m",
    "grad_norm_reference": "2h",
    "eff_lr_window": "10m",
}
TEST_JOB, TEST_RUN = "retrain", "r1"


@dataclass(frozen=True)
class PromSli:
    """bad (or good) and total counter selectors; `error_from_good` means 1 - good/total."""

    numerator: str
    total: str
    error_from_good: bool
    # synthetic series for tests: selector -> which increment it carries (good|bad|total)
    inputs: tuple[tuple[str, str], ...]


def _labels(**extra: str) -> str:
    pairs = {m.JOB_LABEL: TEST_JOB, m.RUN_LABEL: TEST_RUN, **extra}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


def prom_sli(spec: SloSpec) -> PromSli | None:
    """The SLI as Prometheus counters, or None when Prometheus has no equivalent."""
    sli = spec.sli
    saves = f'{m.CHECKPOINTS_TOTAL}{{action="save"}}'
    if sli.kind == "nonfinite_free_steps":
        return PromSli(
            m.NONFINITE_STEPS_TOTAL,
            m.TELEMETRY_STEPS_COUNT,
            False,
            ((m.TELEMETRY_STEPS_COUNT + _labels(), "total"),
             (m.NONFINITE_STEPS_TOTAL + _labels(), "bad")),
        )  # fmt: skip
    if sli.kind == "step_latency":
        threshold = sli.threshold_seconds or 0.0
        if not any(math.isclose(threshold, b) for b in m.STEP_SECONDS_BOUNDS):
            bounds = ", ".join(m.le(b) for b in m.STEP_SECONDS_BOUNDS[:-1])
            raise ValueError(
                f"slos.{spec.name}.sli.threshold_seconds: {threshold:g} is not a bucket bound of "
                f"{m.STEP_SECONDS_BUCKET}, so Prometheus cannot count steps under it "
                f"(accepted: {bounds})"
            )
        le = m.le(threshold)
        return PromSli(
            f'{m.STEP_SECONDS_BUCKET}{{le="{le}"}}',
            m.TELEMETRY_STEPS_COUNT,
            True,
            ((m.TELEMETRY_STEPS_COUNT + _labels(), "total"),
             (m.STEP_SECONDS_BUCKET + _labels(le=le), "good")),
        )  # fmt: skip
    if sli.kind == "checkpoint_success":
        return PromSli(
            f'{m.CHECKPOINTS_TOTAL}{{action="save", outcome="failed"}}',
            saves,
            False,
            ((m.CHECKPOINTS_TOTAL + _labels(action="save", outcome="ok"), "good"),
             (m.CHECKPOINTS_TOTAL + _labels(action="save", outcome="failed"), "bad")),
        )  # fmt: skip
    if sli.kind == "ratio":
        assert sli.good and sli.total
        return PromSli(
            sli.good,
            sli.total,
            True,
            ((sli.total + _labels(), "total"), (sli.good + _labels(), "good")),
        )
    # retrain_success, validation_improvement: per-run outcomes the exporter (which lives and
    # dies with the training process) cannot count; the built-in evaluator covers them
    return None


def _window(seconds: float) -> str:
    return format_duration(seconds)


def _increase(selector: str, window: str) -> str:
    return f"sum by ({m.JOB_LABEL}) (increase({selector}[{window}]))"


@dataclass(frozen=True)
class PromWindow:
    """One burn-rate pair as Prometheus can evaluate it: `long`/`short` floored and rounded."""

    severity: str
    long: float
    short: float
    factor: float
    scaled: BurnWindow  # the policy's pair scaled to the period, before flooring

    @property
    def single(self) -> bool:
        """The pair collapsed onto one window: no multiwindow check is possible."""
        return self.long == self.short


def fillable_window(seconds: float, floor: float) -> float:
    """A window Prometheus can fill: at least `floor`, whole minutes above it (as Pyrra)."""
    if seconds <= floor:
        return floor
    return max(floor, math.floor(seconds / 60 + 0.5) * 60.0)


def _windows(spec: SloSpec, config: Config) -> tuple[PromWindow, ...]:
    floor = config.prometheus.window_floor_seconds
    return tuple(
        PromWindow(
            w.severity,
            fillable_window(w.long, floor),
            fillable_window(w.short, floor),
            w.factor,
            w,
        )
        for w in burn_policy().scaled(spec.period)
    )


def _windows_note(spec: SloSpec, config: Config, pairs: list[PromWindow]) -> str | None:
    """What the rules do instead when the period is too short for some multiwindow pairs."""
    collapsed = [w for w in pairs if w.single]
    if not collapsed:
        return None
    p = config.prometheus
    scaled = ", ".join(
        f"{format_duration(w.scaled.long)}/{format_duration(w.scaled.short)}" for w in collapsed
    )
    return (
        f"SLO period {format_duration(spec.period)} is too short for a multiwindow pair at a "
        f"{p.scrape_interval_seconds:g}s scrape interval: the scaled pairs {scaled} are no longer "
        f"than the {format_duration(p.window_floor_seconds)} window floor "
        f"({p.window_floor_scrapes} scrapes), so each alerts on the one "
        f"{format_duration(collapsed[0].long)} window alone."
    )


def slo_recording_group(spec: SloSpec, sli: PromSli, config: Config) -> dict[str, Any]:
    windows = {_window(s) for w in _windows(spec, config) for s in (w.long, w.short)}
    lengths = sorted(windows, key=parse_duration)
    rules = []
    for window in lengths:
        ratio = f"{_increase(sli.numerator, window)}\n/\n{_increase(sli.total, window)}"
        if sli.error_from_good:
            ratio = f"1 - (\n{ratio}\n)"
        rules.append(
            {
                "record": m.ERROR_RATIO_RECORD.format(window=window),
                "expr": ratio,
                "labels": {"slo": spec.name},
            }
        )
        rules.append(
            {
                "record": m.EVENTS_RECORD.format(window=window),
                "expr": _increase(sli.total, window),
                "labels": {"slo": spec.name},
            }
        )
    return {"name": f"rmswatch-slo-{spec.name}-sli", "rules": rules}


def slo_alerts(spec: SloSpec, config: Config) -> list[dict[str, Any]]:
    alerts = []
    selector = f'{{slo="{spec.name}"}}'
    for severity in ("page", "ticket"):
        pairs = [w for w in _windows(spec, config) if w.severity == severity]
        if not pairs:
            continue
        clauses = []
        for w in pairs:
            threshold = f"{w.factor:g} * {spec.error_budget:.6g}"
            long_w, short_w = _window(w.long), _window(w.short)
            short_clause = (
                ""
                if w.single
                else f"  and {m.ERROR_RATIO_RECORD.format(window=short_w)}{selector}"
                f" > ({threshold})\n"
            )
            clauses.append(
                f"(\n  {m.ERROR_RATIO_RECORD.format(window=long_w)}{selector} > ({threshold})\n"
                f"{short_clause}"
                f"  and {m.EVENTS_RECORD.format(window=long_w)}{selector} "
                f">= {spec.effective_min_events}\n)"
            )
        burns = ", ".join(
            f"{_window(w.long)}{'' if w.single else '/' + _window(w.short)} > {w.factor:g}x"
            for w in pairs
        )
        annotations = _annotations(
            config,
            f"SLO {spec.name} ({spec.objective:g}%) for {{{{ $labels.job }}}}: error "
            f"budget burning at {burns}",
            spec.description or f"Error budget of SLO {spec.name} is burning fast.",
            spec.runbook or "slo",
            run=False,
        )
        note = _windows_note(spec, config, pairs)
        if note is not None:
            annotations["windows"] = note
        alerts.append(
            {
                "alert": SLO_ALERTNAME,
                "expr": "\nor\n".join(clauses),
                "labels": {"severity": severity, "slo": spec.name},
                "annotations": annotations,
            }
        )
    return alerts


def _annotations(
    config: Config, summary: str, description: str, runbook: str, *, run: bool
) -> dict[str, str]:
    external = config.server.base_url()
    query = "job={{ $labels.job }}" + ("&run={{ $labels.run_id }}" if run else "")
    return {
        "summary": summary,
        "description": description,
        "runbook_url": runbook_url(config, runbook),
        "dashboard_url": f"{external}/oncall?{query}",
    }


def health_alerts(config: Config) -> list[dict[str, Any]]:
    h = config.health
    by = f"{m.JOB_LABEL}, {m.RUN_LABEL}"
    w = PROM_WINDOWS
    kinds = "|".join(h.nonfinite.kinds)
    grad = f"stdvar_over_time(ln({m.GRAD_NORM})[{w['grad_norm_window']}:1m])"
    gw = w["grad_norm_window"]
    reference = f"({grad})[{w['grad_norm_reference']}:{gw}] offset {gw}"
    eff = (
        f"avg_over_time({m.EFF_LR_MEAN}[{w['eff_lr_window']}])\n/\n"
        f"avg_over_time({m.EFF_LR_MEAN}[{w['eff_lr_window']}] offset {w['eff_lr_window']})"
    )
    exprs = {
        "nonfinite": (
            f"sum by ({by}) "
            f'(increase({m.NONFINITE_TOTAL}{{kind=~"{kinds}"}}[{w["nonfinite"]}])) > 0'
        ),
        "divergence": (
            f"min_over_time({m.LOSS}[{w['divergence_recent']}])\n> {h.divergence.factor:g} * "
            f"quantile_over_time(0.5, {m.LOSS}[{w['divergence_median']}] "
            f"offset {w['divergence_recent']})"
        ),
        "stalled": f"time() - {m.LAST_STEP_TIMESTAMP} > {h.stalled.after:g}",
        "validation_regression": (
            f"min_over_time({m.VALIDATION_LOSS}[{w['validation_recent']}])\n> "
            f"{1 + h.validation_regression.tolerance:g} * min_over_time({m.VALIDATION_LOSS}"
            f"[{w['validation_history']}] offset {w['validation_recent']})"
        ),
        "grad_norm_variance": (
            f"({grad} > {h.grad_norm_variance.factor:g} * max_over_time({reference}))\nor\n"
            f"({grad} < min_over_time({reference}) / {h.grad_norm_variance.factor:g})"
        ),
        "eff_lr_jump": (
            f"({eff}\n> {h.eff_lr_jump.factor:g})\nor\n({eff}\n< {1 / h.eff_lr_jump.factor:g})"
        ),
        "checkpoint_failures": (
            f"sum by ({by}) (increase({m.CHECKPOINTS_TOTAL}"
            f'{{action="save", outcome="failed"}}'
            f"[{format_duration(h.checkpoint_failures.window)}]))"
            f" >= {h.checkpoint_failures.min_failures}"
        ),
    }  # fmt: skip
    alerts = []
    for name, alertname in RULE_ALERTNAMES.items():
        rule = getattr(h, name)
        if not rule.enabled or name not in exprs:
            continue  # amp_skips: the exporter has no skipped-step metric; built-in evaluator only
        alert: dict[str, Any] = {"alert": alertname, "expr": exprs[name]}
        if rule.for_ > 0:
            alert["for"] = format_duration(rule.for_)
        alert["labels"] = {"severity": rule.severity}
        alert["annotations"] = _annotations(
            config,
            f"{{{{ $labels.job }}}} run {{{{ $labels.run_id }}}}: {alertname}",
            RULE_DESCRIPTIONS[name],
            rule.runbook,
            run=True,
        )
        alerts.append(alert)
    return alerts


def _slos(config: Config) -> list[tuple[SloSpec, PromSli]]:
    found = []
    for spec in effective_slos(config.slos, defaults=config.evaluation.default_slos):
        sli = prom_sli(spec)
        if sli is not None:
            found.append((spec, sli))
    return found


def rules_document(config: Config) -> dict[str, Any]:
    groups = []
    slo_alert_rules = []
    for spec, sli in _slos(config):
        groups.append(slo_recording_group(spec, sli, config))
        slo_alert_rules += slo_alerts(spec, config)
    groups.append({"name": "rmswatch-slo-alerts", "rules": slo_alert_rules})
    groups.append({"name": "rmswatch-training-health", "rules": health_alerts(config)})
    return {"groups": groups}


# --------------------------------------------------------------------------- promtool tests


def _series(per_minute: float, minutes: int, scrape: float) -> str:
    """A counter scraped every `scrape` seconds for `minutes`, rising `per_minute`."""
    return f"0+{per_minute * scrape / 60:g}x{math.ceil(minutes * 60 / scrape)}"


def _render(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in annotations.items():
        for label, label_value in labels.items():
            value = value.replace(f"{{{{ $labels.{label} }}}}", label_value)
        out[key] = value
    return out


def _slo_test_cases(spec: SloSpec, sli: PromSli, config: Config) -> list[dict[str, Any]]:
    """Fires (page and ticket) at a fast burn; quiet at a slow burn and on too few events.

    Series are sampled at the configured scrape interval, so a window too short to fill at that
    interval fails these tests.
    """
    alerts = {a["labels"]["severity"]: a for a in slo_alerts(spec, config)}
    page_factor = max(
        (w.factor for w in _windows(spec, config) if w.severity == "page"), default=0.0
    )
    budget = spec.error_budget
    minutes = 90
    scrape = config.prometheus.scrape_interval_seconds
    interval = format_duration(scrape)
    cases = []

    def inputs(total: float, error_ratio: float) -> list[dict[str, str]]:
        bad = total * error_ratio
        per = {"total": total, "bad": bad, "good": total - bad}
        return [
            {"series": s, "values": _series(per[which], minutes, scrape)} for s, which in sli.inputs
        ]

    def expected(severities: list[str]) -> list[dict[str, Any]]:
        out = []
        for severity in severities:
            labels = {"severity": severity, "slo": spec.name, m.JOB_LABEL: TEST_JOB}
            out.append(
                {
                    "exp_labels": labels,
                    "exp_annotations": _render(alerts[severity]["annotations"], labels),
                }
            )
        return out  # fmt: skip

    busy = 10.0 * spec.effective_min_events  # per minute: every window holds enough events
    if page_factor and 1 / budget > page_factor:
        fast = min(1.0, (page_factor + 1 / budget) / 2 * budget)
        cases.append(
            {"interval": interval, "input_series": inputs(busy, fast),
             "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": SLO_ALERTNAME,
                                  "exp_alerts": expected(sorted(alerts))}]}
        )  # fmt: skip
    cases.append(
        {"interval": interval, "input_series": inputs(busy, 0.5 * budget),
         "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": SLO_ALERTNAME,
                              "exp_alerts": []}]}
    )  # fmt: skip
    if spec.effective_min_events > 2:
        # every event bad, but fewer than min_events in any window: stays quiet
        quiet_rate = (spec.effective_min_events - 1) / (24 * 60 * 3)
        cases.append(
            {"interval": interval, "input_series": inputs(quiet_rate, 1.0),
             "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": SLO_ALERTNAME,
                                  "exp_alerts": []}]}
        )  # fmt: skip
    return cases


def _values(values: list[float]) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _health_inputs(
    config: Config,
) -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]], int]]:
    """rule -> (firing input series, quiet input series, eval minute before `for`).

    Counters start absent (before the exporter's first scrape), then appear at 0 and rise, as
    the exporter's counters do: every labelled child exists at 0 from the start, so
    `increase()` sees the first failure.
    """
    h = config.health
    s = _labels()
    kind = h.nonfinite.kinds[0]
    geometric = [0.001] * 31 + [0.001 * 1.12**i for i in range(1, 40)]
    noisy = [1.0 + 0.05 * (i % 2) for i in range(121)]
    ckpt_labels = _labels(action="save", outcome="failed")
    factor = h.divergence.factor
    return {
        "nonfinite": (
            [{"series": m.NONFINITE_TOTAL + _labels(kind=kind), "values": "_x2 0 0 0 3+3x20"}],
            [{"series": m.NONFINITE_TOTAL + _labels(kind=kind), "values": "_x2 0x23"}],
            10,
        ),
        "divergence": (
            [{"series": m.LOSS + s, "values": f"1x60 {factor * 3:g}x25"}],
            [{"series": m.LOSS + s, "values": "1x85"}],
            70,
        ),
        "stalled": (
            [{"series": m.LAST_STEP_TIMESTAMP + s, "values": "60x60"}],
            [{"series": m.LAST_STEP_TIMESTAMP + s, "values": "0+60x60"}],
            math.ceil(h.stalled.after / 60) + 5,
        ),
        "validation_regression": (
            [{"series": m.VALIDATION + _labels(name="val_loss"),
              "values": f"1x120 {2 + h.validation_regression.tolerance:g}x45"}],
            [{"series": m.VALIDATION + _labels(name="val_loss"), "values": "1x165"}],
            155,
        ),
        "grad_norm_variance": (
            [{"series": m.GRAD_NORM + s,
              "values": _values(noisy + [1.0 + 5.0 * (i % 2) for i in range(30)])}],
            [{"series": m.GRAD_NORM + s, "values": _values(noisy + noisy[:30])}],
            125,
        ),
        "eff_lr_jump": (
            [{"series": m.EFF_LR_STAT + _labels(stat="mean"), "values": _values(geometric)}],
            [{"series": m.EFF_LR_STAT + _labels(stat="mean"), "values": "0.001x70"}],
            45,
        ),
        "checkpoint_failures": (
            [{"series": m.CHECKPOINTS_TOTAL + ckpt_labels, "values": "_x2 0 1x30"}],
            [{"series": m.CHECKPOINTS_TOTAL + ckpt_labels, "values": "_x2 0x28"}],
            10,
        ),
    }  # fmt: skip


# labels of the input series that the alert expression keeps
_KEPT_LABELS = {"eff_lr_jump": {"stat": "mean"}, "validation_regression": {"name": "val_loss"}}


def _health_test_cases(config: Config) -> list[dict[str, Any]]:
    alerts = {a["alert"]: a for a in health_alerts(config)}
    cases = []
    for name, (firing, quiet, minute) in _health_inputs(config).items():
        alertname = RULE_ALERTNAMES[name]
        if alertname not in alerts:
            continue
        rule = getattr(config.health, name)
        eval_time = f"{minute + math.ceil(rule.for_ / 60)}m"
        labels = {m.JOB_LABEL: TEST_JOB, m.RUN_LABEL: TEST_RUN, "severity": rule.severity}
        labels |= _KEPT_LABELS.get(name, {})
        expected = [
            {
                "exp_labels": labels,
                "exp_annotations": _render(alerts[alertname]["annotations"], labels),
            }
        ]
        for series, exp in ((firing, expected), (quiet, [])):
            cases.append(
                {"interval": "1m", "input_series": series,
                 "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname,
                                      "exp_alerts": exp}]}
            )  # fmt: skip
    return cases


def promtool_tests_document(config: Config, rules_file: str) -> dict[str, Any]:
    cases = []
    for spec, sli in _slos(config):
        cases += _slo_test_cases(spec, sli, config)
    cases += _health_test_cases(config)
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": cases}


def dump(document: dict[str, Any]) -> str:
    header = "# Generated by `rmswatch rules` from the rmswatch config; do not edit by hand.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)
