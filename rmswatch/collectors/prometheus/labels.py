"""Label names for the exporter: rmswatch's own (job, run_id, rank) and the user's, sanitised."""

from __future__ import annotations

import re

from rmswatch import catalogue as cat
from rmswatch.trainer_hooks.records import RunInfo

_LABEL_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL_BAD_CHARS = re.compile(r"[^A-Za-z0-9_]")


def sanitize_label_name(name: str) -> str:
    """A valid Prometheus label name for a user label that doesn't clash with rmswatch's own."""
    clean = _LABEL_BAD_CHARS.sub("_", name) or "_"
    if clean[0].isdigit():
        clean = "_" + clean
    if clean.startswith("__") or clean in cat.RESERVED_LABELS:
        clean = "user_" + clean.lstrip("_")
    return clean


def run_labels(run: RunInfo) -> dict[str, str]:
    """The labels on every series of a run: job, run_id, rank, then the user's, sanitised."""
    labels = {"job": run.job, "run_id": run.run_id, "rank": str(run.rank)}
    for key, value in run.labels.items():
        name = key if _LABEL_OK.match(key) and key not in cat.RESERVED_LABELS else None
        name = name or sanitize_label_name(key)
        while name in labels:  # two user keys that sanitise to the same name
            name += "_"
        labels[name] = str(value)
    return labels
