"""Postmortem views: a run's timeline, its hyperparameter diff and the loss spikes in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def flatten_hyperparameters(groups: Sequence[Any] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`{"lr": 0.01, ...}` for one param group, `{"group0.lr": ...}` for several."""
    if not groups:
        return {}
    if isinstance(groups, Mapping):
        return dict(groups)
    if len(groups) == 1 and isinstance(groups[0], Mapping):
        return dict(groups[0])
    flat: dict[str, Any] = {}
    for index, group in enumerate(groups):
        if isinstance(group, Mapping):
            flat.update({f"group{index}.{key}": value for key, value in group.items()})
    return flat


def hyperparameter_diff(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> pd.DataFrame:
    """Every hyperparameter with both values; `changed` marks the ones that differ."""
    keys = sorted(set(current) | set(baseline))
    rows = [
        {
            "name": key,
            "this run": _show(current.get(key)),
            "last good run": _show(baseline.get(key)),
            "changed": current.get(key) != baseline.get(key),
        }
        for key in keys
    ]
    frame = pd.DataFrame(rows, columns=["name", "this run", "last good run", "changed"])
    return frame.sort_values(["changed", "name"], ascending=[False, True]).reset_index(drop=True)


def _rows(frame: pd.DataFrame) -> list[Any]:
    return list(frame.itertuples(index=False))


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def loss_spikes(
    steps: pd.DataFrame, *, window: int = 50, factor: float = 3.0, limit: int = 20
) -> pd.DataFrame:
    """Steps whose loss exceeds `factor` x the median of the previous `window` steps.

    Consecutive spiking steps count once, at the first of them; a non-finite loss after finite
    ones is a spike.
    """
    columns = ["step", "loss", "median"]
    if steps.empty:
        return pd.DataFrame(columns=columns)
    loss = pd.to_numeric(steps["loss"], errors="coerce").astype(float)
    finite = loss.where(np.isfinite(loss))
    median = finite.rolling(window, min_periods=min(window, 5)).median().shift(1)
    # NaN and missing look alike once stored; a gap after finite losses counts as a spike
    seen_finite = finite.ffill().notna()
    spiking = (loss > factor * median) | (~np.isfinite(loss) & seen_finite)
    starts = spiking & ~spiking.shift(1, fill_value=False)
    found = pd.DataFrame({"step": steps["step"], "loss": loss, "median": median})[starts]
    return found.head(limit).reset_index(drop=True)


def run_verdict(run: Mapping[str, Any], firings: pd.DataFrame) -> str:
    """The run's verdict in words. The alerting engine's own (`run["verdict"]`) when the store
    has one; else from the status the script closed with and the alerts that fired on it: a run
    closed `succeeded` while a page fired on it "succeeded with incident" (the incidents rule)."""
    recorded = run.get("verdict")
    if isinstance(recorded, str) and recorded:
        return recorded
    status = str(run.get("status") or "unknown")
    detail = str(run.get("status_detail") or "").strip()
    if status == "succeeded":
        paged = not firings.empty and bool(
            ((firings["to_state"] == "firing") & (firings["severity"] == "page")).any()
        )
        return "succeeded with incident" if paged else "succeeded"
    return f"{status}: {detail}" if detail else status


def validation_summary(validations: pd.DataFrame) -> list[dict[str, Any]]:
    """One timeline row per validation metric (not one per evaluation, which would bury the
    events): at its last evaluation, with its first, best and last values."""
    if validations is None or validations.empty:
        return []
    rows = []
    for name, points in validations.sort_values("step").groupby("name", sort=True):
        values = pd.to_numeric(points["value"], errors="coerce").astype(float)
        finite = values[np.isfinite(values)]
        best_at = int(np.argmin(values.where(np.isfinite(values), np.inf).to_numpy()))
        best = (
            f", best {finite.min():.4g} at step {int(points['step'].to_numpy()[best_at])}"
            if not finite.empty
            else ""
        )
        last = points.iloc[-1]
        rows.append(
            {
                "time": last.get("time"),
                "step": int(last["step"]),
                "kind": "validation",
                "what": f"{name}: {len(points)} evaluations, steps "
                f"{int(points['step'].iloc[0])}–{int(last['step'])}: "
                f"first {values.iloc[0]:.4g}{best}, last {values.iloc[-1]:.4g}",
            }
        )
    return rows


def firing_rows(firings: pd.DataFrame) -> list[dict[str, Any]]:
    """Every firing and resolution from the alert history, each with the value it had then
    (not the alert's summary as rewritten since)."""
    if firings is None or firings.empty:
        return []
    changes = firings[firings["to_state"].isin(["firing", "resolved", "acknowledged"])]
    rows = []
    for event in changes.itertuples(index=False):
        value = getattr(event, "value", None)
        at = f" at value {value:.4g}" if isinstance(value, float) and not pd.isna(value) else ""
        what = {"firing": "fired", "resolved": "resolved", "acknowledged": "acknowledged"}[
            str(event.to_state)
        ]
        detail = str(getattr(event, "detail", "") or "")
        rows.append(
            {
                "time": event.time,
                "step": None,
                "kind": f"alert {what}",
                "what": f"{event.alertname} ({event.severity}) {what}{at}"
                + (f" — {detail}" if detail else ""),
            }
        )
    return rows


# LR changes of one group in the same direction at most this many steps apart are one episode
LR_EPISODE_GAP = 10


def lr_change_rows(changes: pd.DataFrame) -> list[dict[str, Any]]:
    """LR changes as timeline rows: a burst of changes in one direction (someone raising the
    LR again and again) is one row at its first step, with the overall factor."""
    rows: list[dict[str, Any]] = []
    for group, found in changes.sort_values("step").groupby("group", sort=True):
        episodes: list[list[Any]] = []
        for change in _rows(found):
            up = change.after > change.before
            last = episodes[-1][-1] if episodes else None
            if (
                last is not None
                and change.step - last.step <= LR_EPISODE_GAP
                and ((last.after > last.before) == up)
            ):
                episodes[-1].append(change)
            else:
                episodes.append([change])
        for episode in episodes:
            first, last = episode[0], episode[-1]
            verb = "raised" if last.after > first.before else "lowered"
            times = (
                f" {len(episode)} times, steps {first.step}–{last.step}" if len(episode) > 1 else ""
            )
            rows.append(
                {
                    "time": None,
                    "step": int(first.step),
                    "kind": "LR changed",
                    "what": f"{group}: lr {verb}{times}: {first.before:.4g} → {last.after:.4g} "
                    f"(×{last.after / first.before:.3g})",
                }
            )
    return rows


def timeline(
    run: Mapping[str, Any],
    alerts: pd.DataFrame,
    spikes: pd.DataFrame,
    first_bad: Mapping[str, Any] | None,
    checkpoints: pd.DataFrame,
    validations: pd.DataFrame | None = None,
    step_times: pd.DataFrame | None = None,
    *,
    firings: pd.DataFrame | None = None,
    lr_changes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One table of what happened, in time order: start (and the step it resumed from), every
    alert firing, LR changes, loss spikes, the first non-finite step and layers, checkpoints,
    one summary row per validation metric, the end with the run's verdict (`step_times` places
    step-only events). Without an alert history (`firings`), each alert is one row at its
    start with its current summary."""
    resumed = run.get("resumed_from_step")
    started = "run started" + (
        f" (resumed from step {int(resumed)})"
        if resumed is not None and not pd.isna(resumed)
        else ""
    )
    events: list[dict[str, Any]] = [
        {"time": run["started_at"], "step": None, "kind": "run", "what": started}
    ]
    if firings is not None:
        events.extend(firing_rows(firings))
    else:
        events.extend(
            {
                "time": getattr(alert, "starts_at", None),
                "step": None,
                "kind": "alert",
                "what": f"{alert.alertname} ({getattr(alert, 'severity', '')}): "
                f"{getattr(alert, 'summary', '')}",
            }
            for alert in _rows(alerts)
        )
    if lr_changes is not None:
        events.extend(lr_change_rows(lr_changes))
    events.extend(
        {
            "time": None,
            "step": int(spike.step),
            "kind": "loss spike",
            "what": f"loss {spike.loss:.4g} vs median {spike.median:.4g}",
        }
        for spike in _rows(spikes)
    )
    if first_bad is not None:
        layers = ", ".join(name for name, _ in first_bad["layers"]) or "no layer (loss only)"
        events.append(
            {
                "time": None,
                "step": first_bad["step"],
                "kind": "first non-finite",
                "what": f"first non-finite at step {first_bad['step']} in {layers}",
            }
        )
    events.extend(
        {
            "time": point.time,
            "step": int(point.step),
            "kind": f"checkpoint {point.action}",
            "what": ("ok" if point.ok else f"FAILED {point.detail}")
            + (f", {point.seconds:.2f}s" if point.seconds is not None else ""),
        }
        for point in _rows(checkpoints)
    )
    if validations is not None:
        events.extend(validation_summary(validations))
    if run.get("ended_at") is not None and not pd.isna(run.get("ended_at")):
        verdict = run_verdict(run, firings if firings is not None else pd.DataFrame())
        events.append(
            {
                "time": run["ended_at"],
                "step": run.get("last_step"),
                "kind": "run",
                "what": f"run ended — verdict: {verdict}",
            }
        )
    frame = pd.DataFrame(events, columns=["time", "step", "kind", "what"])
    return order_events(frame, step_times)


def order_events(frame: pd.DataFrame, step_times: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every event in one order. An event known only by its step gets that step's time from
    `step_times` (step, time; the nearest recorded step at or before it, as telemetry may be
    sparse); one known only by its time gets the last step at or before it; events then sort
    by time, ties by step, so alerts, spikes, NaNs and checkpoints interleave as they happened.

    Built from whole columns (no masked `.loc` writes), so an event table with nothing to fill
    in behaves the same under pandas 2 and 3."""
    frame = frame.copy()
    step = pd.to_numeric(frame["step"], errors="coerce").astype(float)
    time = _utc_ns(frame["time"])
    if step_times is not None and not step_times.empty:
        known = step_times.assign(time=_utc_ns(step_times["time"])).dropna(subset=["time"])
        known = known.assign(step=pd.to_numeric(known["step"], errors="coerce").astype(float))
        known = known.dropna(subset=["step"])
        if not known.empty:
            time = time.where(time.notna(), _time_of_step(known.sort_values("step"), step))
            step = step.where(step.notna(), _step_of_time(known.sort_values("time"), time))
    frame["time"] = time
    frame["step"] = step
    frame = frame.sort_values(["time", "step"], na_position="last", kind="stable")
    frame["step"] = frame["step"].round().astype("Int64")
    return frame.reset_index(drop=True)


def _utc_ns(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def _epoch_ns(times: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch; the smallest int64 for NaT (sorts before every time)."""
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    return np.where(np.isnat(naive), np.iinfo("int64").min, naive.astype("int64"))


def _time_of_step(known: pd.DataFrame, step: pd.Series) -> pd.Series:
    """For each step, the time of the last recorded step at or before it (NaT before the first)."""
    where = np.searchsorted(known["step"].to_numpy(), step.fillna(-np.inf).to_numpy(), "right")
    times = known["time"].iloc[np.clip(where - 1, 0, None)].to_numpy()
    found = pd.Series(times, index=step.index).astype("datetime64[ns, UTC]")
    return found.where((where > 0) & step.notna().to_numpy())


def _step_of_time(known: pd.DataFrame, time: pd.Series) -> pd.Series:
    """For each time, the last step recorded at or before it (NaN before the first)."""
    where = np.searchsorted(_epoch_ns(known["time"]), _epoch_ns(time), "right")
    steps = known["step"].to_numpy()[np.clip(where - 1, 0, None)]
    return pd.Series(steps, index=time.index).where((where > 0) & time.notna().to_numpy())
