"""Parse what the exporter serves, so tests assert on values rather than on text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rmswatch.collectors.prometheus import RunCollector


def scrape(collector: RunCollector) -> list[Sample]:
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def values(samples: list[Sample], metric: str, /, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = values(samples, metric, **labels)
    assert len(found) == 1, f"{metric}{labels}: expected one sample, found {found}"
    return found[0]


def label_values(samples: list[Sample], name: str, label: str) -> set[str]:
    return {s.labels[label] for s in samples if s.name == name and label in s.labels}
