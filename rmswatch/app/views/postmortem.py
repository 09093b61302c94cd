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


def timeline(
    run: Mapping[str, Any],
    alerts: pd.DataFrame,
    spikes: pd.DataFrame,
    first_bad: Mapping[str, Any] | None,
    checkpoints: pd.DataFrame,
    validations: pd.DataFrame | None = None,
    step_times: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One table of what happened, in time order: start, alerts, loss spikes, the first
    non-finite step, checkpoints, validations, end (`step_times` places step-only events)."""
    events: list[dict[str, Any]] = [
        {"time": run["started_at"], "step": None, "kind": "run", "what": "run started"}
    ]
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
        events.extend(
            {
                "time": getattr(point, "time", None),
                "step": int(point.step),
                "kind": "validation",
                "what": f"{getattr(point, 'name', 'val_loss')} {point.value:.4g}",
            }
            for point in _rows(validations)
        )
    if run.get("ended_at") is not None and not pd.isna(run.get("ended_at")):
        events.append(
            {
                "time": run["ended_at"],
                "step": run.get("last_step"),
                "kind": "run",
                "what": f"run ended: {run.get('status')} {run.get('status_detail') or ''}".strip(),
            }
        )
    frame = pd.DataFrame(events, columns=["time", "step", "kind", "what"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
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
