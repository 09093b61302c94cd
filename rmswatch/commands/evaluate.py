"""`rmswatch evaluate --db URL [--config FILE]`: one alert evaluation tick and one delivery pass."""

from __future__ import annotations

import os

from rmswatch.alerting.scheduler import start_scheduler
from rmswatch.config import load_config
from rmswatch.store.engine import open_store


def evaluate_command(db_url: str, config_path: str | None) -> int:
    config = load_config(config_path)
    engine = open_store(db_url)
    handle = start_scheduler(engine, config, start=False, environ=os.environ)
    try:
        result = handle.tick()
        if result is None:
            if handle.last_error:
                print(f"rmswatch evaluate: {handle.last_error}")
                return 1
            print("rmswatch evaluate: another server holds the alerting lock; nothing done")
            return 0
        waiting = handle.deliver()
        print(
            f"{result.signals} signals, {len(result.transitions)} state changes, "
            f"{result.notifications} notifications written, {handle.deliveries} delivered"
            + (f", {waiting.waiting} waiting" if waiting else "")
        )
        return 0
    finally:
        handle.shutdown()
        engine.dispose()
