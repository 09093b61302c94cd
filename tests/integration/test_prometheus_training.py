"""A real RMSprop training watched with `prometheus_port=P`, scraped by a real Prometheus."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import rmswatch
from rmswatch import catalogue as cat
from tests.helpers import free_port, wait_until
from tests.integration.test_prometheus_exporter import Prometheus, promtool_check, scrape_text

pytestmark = pytest.mark.integration


def train(monitor: rmswatch.Monitor, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator)
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        monitor.record_loss(loss)


def test_prometheus_reads_back_what_the_monitor_recorded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    port = free_port()
    monitor = rmswatch.watch(
        opt, model=model, job="prom-it", labels={"model": "mlp"}, prometheus_port=port
    )
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
    try:
        train(monitor, model, opt)
        assert monitor.flush()
        last = monitor.records[-1]
        # budget mode: the newest record may be a sentinel (no layers); layer series come
        # from the newest full record
        last_full = [r for r in monitor.records if r.full][-1]
        text = scrape_text(f"http://127.0.0.1:{port}/metrics")
        lint = promtool_check(text)
        assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")

        selector = f'{{job="prom-it",run_id="{monitor.run_id}",model="mlp"}}'
        wait_until(
            lambda: prometheus.value(cat.STEPS_TOTAL.name + selector) == last.step,
            timeout=60,
            what=f"Prometheus to scrape steps_total == {last.step}",
        )
        assert last.step == 40
        grad_norm = prometheus.value(cat.GRAD_NORM.name + selector)
        assert grad_norm is not None and math.isclose(grad_norm, last.grad_norm, rel_tol=1e-12)
        layer = prometheus.value(
            cat.LAYER_GRAD_NORM.name + selector.replace("}", ',layer="0.weight"}')
        )
        assert layer == pytest.approx(last_full.layers["0.weight"].grad_norm, rel=1e-12)
        assert last.loss is not None
        assert prometheus.value(cat.LOSS.name + selector) == pytest.approx(last.loss, rel=1e-12)
    finally:
        monitor.close(status="succeeded")
        prometheus.stop()
