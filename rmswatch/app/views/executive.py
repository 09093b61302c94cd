"""Executive numbers: retrain success and its error budget, validation gains, GPU spend, drift."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.alerting.slo import budget_remaining
from rmswatch.alerting.spec import SloSpec
from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    GREEN,
    RED,
    empty_figure,
    figure,
    format_number,
    format_percent,
    label,
    symlog,
    symlog_ticks,
)

STILL_RUNNING = frozenset({"running"})


@dataclass(frozen=True, slots=True)
class SloRollup:
    """One SLO over several series, from the evaluator's period counts."""

    events: int
    bad: int
    objective: float  # a percentage, e.g. 95
    budget_left: float

    @property
    def rate(self) -> float:
        return (self.events - self.bad) / self.events if self.events else math.nan


def slo_rollup(table: pd.DataFrame, spec: SloSpec, jobs: Sequence[str] | None = None) -> SloRollup:
    """An SLO's events summed over its series (the jobs given, or all), with the budget left by
    the alerting engine's own formula."""
    rows = table[table["slo"] == spec.name] if not table.empty else table
    if jobs is not None and not rows.empty:
        rows = rows[rows["key"].isin(list(jobs))]
    events = float(rows["events_period"].sum()) if not rows.empty else 0.0
    bad = float(rows["bad_period"].sum()) if not rows.empty else 0.0
    left = float(budget_remaining(np.array([bad]), np.array([events]), spec.error_budget)[0])
    return SloRollup(events=int(events), bad=int(bad), objective=spec.objective, budget_left=left)


def compliance_table(
    table: pd.DataFrame,
    jobs: Sequence[str] | None = None,
    specs: Mapping[str, SloSpec] | None = None,
) -> pd.DataFrame:
    """Per job: the budget left of every SLO (a cell per SLO) and whether all are within budget.

    A series with no events in the period shows `no events`; one with fewer events than the SLO
    needs before it may alert (`min_events`, the alerts' own rule) shows `too few events (n of
    m)`. Neither breaks compliance: one failed retrain out of one is not yet a spent budget.
    `within budget` names the SLOs that are spent.
    """
    if table.empty:
        return pd.DataFrame(columns=["job", "within budget"])
    rows = table if jobs is None else table[table["key"].isin(list(jobs))]
    needed = [
        specs[name].effective_min_events if specs and name in specs else 1 for name in rows["slo"]
    ]
    events = rows["events_period"].to_numpy(dtype=float)
    judged = (events > 0) & (events >= np.asarray(needed, dtype=float))
    cells = rows.assign(
        cell=[
            "no events"
            if count == 0
            else f"too few events ({count:.0f} of {need})"
            if not ok
            else format_percent(left)
            if left >= 0
            else "SPENT"
            for count, need, ok, left in zip(
                events, needed, judged, rows["budget_remaining"], strict=True
            )
        ],
        breach=judged & (rows["budget_remaining"].to_numpy(dtype=float) < 0),
    )
    wide = cells.pivot_table(index="key", columns="slo", values="cell", aggfunc="first")
    wide = wide.reindex(columns=list(dict.fromkeys(rows["slo"]))).fillna("—")
    spent = cells[cells["breach"]].groupby("key")["slo"].apply(lambda names: ", ".join(names))
    wide.insert(
        0,
        "within budget",
        [f"NO — {spent[key]} spent" if key in spent.index else "yes" for key in wide.index],
    )
    wide = wide.assign(_order=[key in spent.index for key in wide.index])
    wide = wide.sort_values(["_order"], ascending=False, kind="stable").drop(columns="_order")
    return wide.rename_axis(index="job", columns=None).reset_index()


def validation_delta_per_run(runs: pd.DataFrame, validations: pd.DataFrame) -> pd.DataFrame:
    """Per succeeded retrain: its final validation loss minus the final validation loss of the
    same job's previous succeeded retrain (negative: the retrain made the model better).

    A failed retrain ships no model, so it has no delta (it counts against retrain success
    instead); the first succeeded retrain of a job has nothing to compare with.
    """
    columns = ["run_id", "job", "started_at", "previous_run_id", "previous", "last", "delta"]
    if runs.empty or validations.empty:
        return pd.DataFrame(columns=columns)
    ordered = validations.dropna(subset=["value"]).sort_values(["run_pk", "step"])
    final = ordered.groupby("run_pk")["value"].last().rename("last")
    shipped = runs[runs["status"] == "succeeded"].merge(
        final, left_on="run_pk", right_index=True, how="inner"
    )
    shipped = shipped.sort_values(["job", "started_at"])
    by_job = shipped.groupby("job")
    shipped["previous"] = by_job["last"].shift(1)
    shipped["previous_run_id"] = by_job["run_id"].shift(1)
    shipped["delta"] = shipped["last"] - shipped["previous"]
    compared = shipped.dropna(subset=["previous"])
    return compared[columns].sort_values("started_at").reset_index(drop=True)


def gpu_spend_by_day(runs: pd.DataFrame, gpu_hour_usd: float) -> pd.DataFrame:
    """GPU-hours and spend per UTC day the runs started on."""
    if runs.empty:
        return pd.DataFrame(columns=["day", "gpu_hours", "spend_usd"])
    frame = pd.DataFrame(
        {
            "day": runs["started_at"].dt.floor("D"),
            "gpu_hours": runs["gpu_seconds"].fillna(0.0).astype(float) / 3600.0,
        }
    )
    daily = pd.DataFrame(frame.groupby("day", as_index=False)["gpu_hours"].sum())
    daily["spend_usd"] = daily["gpu_hours"] * gpu_hour_usd
    return daily


def drift_kpi(samples: pd.DataFrame) -> pd.DataFrame:
    """Latest value of every (job, SLI name) posted through ingest, with its previous value."""
    columns = ["job", "name", "time", "value", "previous"]
    if samples.empty:
        return pd.DataFrame(columns=columns)
    ordered = samples.sort_values("time")
    ordered = ordered.assign(previous=ordered.groupby(["job", "name"])["value"].shift(1))
    latest = ordered.groupby(["job", "name"], as_index=False).tail(1)
    return pd.DataFrame(latest[columns]).reset_index(drop=True)


def success_trend_figure(runs: pd.DataFrame, objective: float | None) -> go.Figure:
    """Daily retrain success rate against the objective line (a fraction; None: no SLO)."""
    title = "Retrain success rate per day"
    finished = runs[~runs["status"].isin(STILL_RUNNING)] if not runs.empty else runs
    if finished.empty:
        return empty_figure(title, "no finished runs yet — success rate appears when runs end")
    daily = (
        finished.assign(
            day=finished["started_at"].dt.floor("D"),
            # "succeeded with incident" (a page fired about the run) is not a success here
            ok=finished.get("verdict", finished["status"]) == "succeeded",
        )
        .groupby("day", as_index=False)["ok"]
        .mean()
    )
    fig = figure(title)
    colors = [GREEN if objective is None or rate >= objective else RED for rate in daily["ok"]]
    fig.add_bar(x=daily["day"], y=daily["ok"] * 100, marker_color=colors, name="success %")
    if objective is not None:
        fig.add_hline(y=objective * 100, line_dash="dash", line_color=AMBER, annotation_text="SLO")
    fig.update_yaxes(range=[0, 105], ticksuffix="%")
    fig.update_xaxes(tickformat="%b %d", dtick=86_400_000)
    return fig


def spend_figure(daily: pd.DataFrame) -> go.Figure:
    title = "GPU-hours and spend per day"
    if daily.empty:
        return empty_figure(title, "no runs yet — GPU-hours appear once a run reports")
    if not (daily["gpu_hours"] > 0).any():
        return empty_figure(
            title,
            "no GPU time recorded: these runs trained on the CPU",
        )
    fig = figure(title)
    fig.add_bar(x=daily["day"], y=daily["gpu_hours"], name="GPU-hours", marker_color=BLUE)
    fig.add_scatter(
        x=daily["day"],
        y=daily["spend_usd"],
        name="spend (USD)",
        yaxis="y2",
        mode="lines+markers",
        line={"color": AMBER, "width": 3},
    )
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False})
    fig.update_xaxes(tickformat="%b %d", dtick=86_400_000)
    return fig


# a retrain's validation-loss change is an outlier when it lies this many robust spreads (MAD)
# from the median: one blown-up retrain (+3e29) must not become "the average change", while a
# retrain that is merely worse (the slow-convergence one, +1.5) stays in and shows as worse
OUTLIER_SPREADS = 100.0


def flag_outliers(values: pd.Series) -> pd.Series:
    """True where a value lies more than OUTLIER_SPREADS median absolute deviations from the
    median (non-finite values always). The spread has a floor of a tenth of the median's size,
    so a handful of nearly equal changes doesn't flag ordinary noise."""
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    finite = numeric[np.isfinite(numeric)]
    if finite.empty:
        return pd.Series(~np.isfinite(numeric.to_numpy()), index=values.index)
    median = float(finite.median())
    spread = float((finite - median).abs().median())
    scale = max(spread, 0.1 * abs(median), 1e-12)
    return pd.Series(
        ~np.isfinite(numeric) | ((numeric - median).abs() > OUTLIER_SPREADS * scale),
        index=values.index,
    )


@dataclass(frozen=True, slots=True)
class DeltaSummary:
    """The typical validation-loss change per retrain and the retrains left out of it."""

    median: float
    compared: int
    outliers: pd.DataFrame  # rows of the deltas frame

    def sentence(self) -> str:
        if not self.compared:
            return "needs two succeeded retrains of a job that record validation loss"
        better = "better" if self.median < 0 else "worse" if self.median > 0 else "unchanged"
        text = (
            f"typical retrain vs the job's previous one, over {self.compared} retrains: "
            f"{better} (negative is better)"
        )
        if not self.outliers.empty:
            worst = self.outliers.iloc[0]
            text += (
                f". Left out as outliers: {len(self.outliers)}, e.g. {worst['run_id']} "
                f"({format_number(worst['delta'], 3)}) — read its postmortem"
            )
        return text


def delta_summary(deltas: pd.DataFrame) -> DeltaSummary:
    """Median change over the retrains that aren't outliers (`flag_outliers`)."""
    if deltas.empty:
        return DeltaSummary(math.nan, 0, deltas)
    outlier = flag_outliers(deltas["delta"])
    kept = deltas.loc[~outlier, "delta"].astype(float)
    flagged = (
        deltas[outlier].assign(size=lambda f: f["delta"].abs()).sort_values("size", ascending=False)
    )
    return DeltaSummary(
        median=float(kept.median()) if not kept.empty else math.nan,
        compared=len(deltas),
        outliers=flagged.drop(columns="size").reset_index(drop=True),
    )


INCIDENT_VERDICT = "succeeded with incident"


def incident_run_ids(runs: pd.DataFrame, events: pd.DataFrame) -> set[str]:
    """Runs that closed `succeeded` while a page-severity health alert fired on them (the
    incidents rule). The store's own `verdict` column wins when it has one; else a page firing
    (SLO burn pages are the job's, not a run's) names the run, or falls in its lifetime."""
    if runs.empty:
        return set()
    if "verdict" in runs and runs["verdict"].notna().any():
        return set(runs.loc[runs["verdict"] == INCIDENT_VERDICT, "run_id"].astype(str))
    if events.empty:
        return set()
    pages = events[
        (events["to_state"] == "firing")
        & (events["severity"] == "page")
        & ~events["alertname"].astype(str).str.startswith("Slo")
    ]
    found: set[str] = set()
    for run in runs[runs["status"] == "succeeded"].itertuples(index=False):
        mine = pages[pages["job"] == run.job]
        named = mine["run_id"].fillna("").astype(str)
        ended: Any = run.ended_at
        if ended is None or ended is pd.NaT:
            ended = pd.Timestamp.max.tz_localize("UTC")
        during = (mine["time"] >= run.started_at) & (mine["time"] <= ended) & (named == "")
        if bool((named == str(run.run_id)).any() or during.any()):
            found.add(str(run.run_id))
    return found


def job_rows(runs: pd.DataFrame, deltas: pd.DataFrame, incidents: set[str]) -> pd.DataFrame:
    """One row per job: its retrains by outcome and its typical validation-loss change."""
    columns = ["job", "retrains", "succeeded", "with incident", "failed", "running",
               "median val-loss change", "latest change", "outliers"]  # fmt: skip
    if runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for job, mine in runs.groupby("job", sort=True):
        ok = mine["status"] == "succeeded"
        with_incident = mine["run_id"].astype(str).isin(incidents)
        changes = deltas[deltas["job"] == job] if not deltas.empty else deltas
        summary = delta_summary(changes)
        rows.append(
            {
                "job": job,
                "retrains": len(mine),
                "succeeded": int((ok & ~with_incident).sum()),
                "with incident": int((ok & with_incident).sum()),
                "failed": int((~ok & ~mine["status"].isin(STILL_RUNNING)).sum()),
                "running": int(mine["status"].isin(STILL_RUNNING).sum()),
                "median val-loss change": format_number(summary.median, 3)
                if summary.compared
                else "—",
                "latest change": format_number(changes["delta"].iloc[-1], 3)
                if not changes.empty
                else "—",
                "outliers": ", ".join(summary.outliers["run_id"].astype(str)) or "none",
            }
        )
    return pd.DataFrame(rows, columns=columns)


def validation_delta_figure(deltas: pd.DataFrame) -> go.Figure:
    """Each retrain's change on a symmetric log axis (a +3e29 blow-up and a -0.05 gain are
    both readable); outliers in red, named in the hover."""
    title = "Final validation loss vs the job's previous retrain (negative is better; symlog)"
    if deltas.empty:
        return empty_figure(
            title,
            "needs two succeeded retrains of a job that call monitor.record_validation(...)",
        )
    values = deltas["delta"].astype(float).to_numpy()
    finite = np.abs(values[np.isfinite(values) & (values != 0)])
    # a round threshold (0.01, not 0.0616) gives round tick labels: 0, 0.01, 0.1, 1, ...
    linthresh = 10.0 ** math.floor(math.log10(float(np.median(finite)))) if finite.size else 1.0
    outlier = flag_outliers(deltas["delta"]).to_numpy()
    fig = figure(title)
    fig.add_bar(
        x=[label(r) for r in deltas["run_id"]],
        y=symlog(np.where(np.isfinite(values), values, np.nan), linthresh),
        marker_color=[
            RED if o else GREEN if d <= 0 else AMBER for o, d in zip(outlier, values, strict=True)
        ],
        customdata=[
            f"{format_number(d, 4)}{' — outlier, left out of the median' if o else ''}"
            for d, o in zip(values, outlier, strict=True)
        ],
        hovertemplate="%{x}: %{customdata}<extra></extra>",
        name="change",
    )
    kept = values[~outlier & np.isfinite(values)]
    ticks, texts = symlog_ticks(kept if kept.size else values, linthresh)
    fig.update_yaxes(tickvals=ticks, ticktext=texts, title_text="Δ val loss (symlog)")
    if outlier.any() and kept.size:
        # the axis spans the ordinary retrains; an outlier's bar runs off the edge, labelled
        scaled = symlog(kept, linthresh)
        low, high = min(float(scaled.min()), 0.0), max(float(scaled.max()), 0.0)
        pad = 0.15 * (high - low or 1.0)
        fig.update_yaxes(range=[low - pad, high + pad])
        for run_id, delta in zip(deltas["run_id"][outlier], values[outlier], strict=True):
            fig.add_annotation(
                x=label(run_id), y=high + pad if not delta < 0 else low - pad,
                text=f"{'↑' if not delta < 0 else '↓'} {format_number(delta, 3)} (outlier)",
                showarrow=False, yanchor="top" if not delta < 0 else "bottom",
                font={"color": RED},
            )  # fmt: skip
    fig.update_xaxes(tickangle=-30)
    return fig


@dataclass(frozen=True, slots=True)
class DriftCard:
    title: str
    value: str
    sentence: str
    tone: str


# a production SLI this many times its value a week earlier is "rising": someone should look
DRIFT_RISING = 1.5
WEEK = pd.Timedelta(days=7)


def drift_cards(samples: pd.DataFrame, limit: int = 3) -> list[DriftCard]:
    """The latest value of each production SLI in words: what it is, its unit (the sample's
    `unit` label; said when absent), how it compares with a week before (or the oldest sample
    when the history is shorter), and what to do about it."""
    if samples.empty:
        return []
    cards = []
    ordered = samples.sort_values("time")
    for (job, name), series in list(ordered.groupby(["job", "name"], sort=True))[:limit]:
        latest = series.iloc[-1]
        labels = latest.get("labels") if isinstance(latest.get("labels"), dict) else {}
        unit = str(labels.get("unit", "")) if labels else ""
        earlier = series[series["time"] <= latest["time"] - WEEK]
        reference, when = (
            (earlier.iloc[-1], "a week ago") if not earlier.empty else (series.iloc[0], "")
        )
        if not when:
            age = latest["time"] - reference["time"]
            when = f"its first sample {_age_words(age)} ago" if age > pd.Timedelta(0) else ""
        value = float(latest["value"])
        before = float(reference["value"])
        tone, trend = "neutral", "only one sample so far"
        if when:
            ratio = value / before if before else math.inf
            if ratio >= DRIFT_RISING:
                tone = "warn"
                trend = (
                    f"{ratio:.3g}× {when} ({format_number(before, 3)}): rising — "
                    "ask the model owner whether to retrain"
                )
            elif ratio <= 1 / DRIFT_RISING:
                tone, trend = "good", f"{ratio:.3g}× {when} ({format_number(before, 3)}): falling"
            else:
                tone, trend = (
                    "good",
                    f"steady vs {when} ({format_number(before, 3)}): nothing to do",
                )
        shown = format_number(value, 3) + (f" {unit}" if unit else "")
        cards.append(
            DriftCard(
                title=f"{str(name).replace('_', ' ')} · {job}",
                value=shown,
                sentence=(f"unit: {unit}; " if unit else "no unit given; ") + trend,
                tone=tone,
            )
        )
    return cards


def _age_words(age: pd.Timedelta) -> str:
    seconds = age.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
