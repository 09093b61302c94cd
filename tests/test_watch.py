"""`rmswatch.watch()` at the boundary: bad arguments fail clearly and leave nothing running."""

from __future__ import annotations

import socket

import pytest
import torch

import rmswatch
from tests.helpers import free_port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _model() -> torch.nn.Module:
    return torch.nn.Linear(4, 2)


def test_an_unsupported_optimizer_is_refused_before_an_exporter_starts() -> None:
    port = free_port()
    with pytest.raises(TypeError, match=r"SGD.*RMSprop"):
        rmswatch.watch(torch.optim.SGD(_model().parameters(), lr=0.1), prometheus_port=port)
    assert _port_is_free(port)


def test_a_bad_monitor_argument_closes_the_exporter_it_had_started() -> None:
    port = free_port()
    with pytest.raises(ValueError, match="every"):
        rmswatch.watch(torch.optim.RMSprop(_model().parameters()), prometheus_port=port, every=0)
    assert _port_is_free(port)


def test_a_store_that_is_not_a_url_names_the_argument_and_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"store: .*sqlite:///.*postgresql\+psycopg.*http"):
        rmswatch.watch(torch.optim.RMSprop(_model().parameters()), store="")
