"""Receivers, the route tree and inhibition rules, as read from the config file.

Being built in the alerting issue; Alertmanager's meanings for group_by, group_wait,
group_interval and repeat_interval.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceiverConfig(_Strict):
    name: str
    kind: Literal["webhook", "slack", "pagerduty", "alertmanager"] = "webhook"
    url: str


class RouteConfig(_Strict):
    receiver: str
    group_by: tuple[str, ...] = ("job",)
