"""A child process for the store's multi-process tests: writes telemetry through a StoreWriter.

`python -m tests.integration.store_child URL RUN_ID STEPS [--flush S] [--sleep S] [--go FILE]`
prints `ready`, waits for FILE to exist (so many children start writing at the same moment),
then prints `step N TIME` after handing each record to the writer, and `done DROPPED FLUSH_ERRORS`
after close. The records are hand-built, like the monitor's sink thread would deliver them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rmswatch.collectors.store_writer import StoreWriter
from rmswatch.trainer_hooks.records import RunStatus
from tests.factories import run_info, step_record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("steps", type=int)
    parser.add_argument("--flush", type=float, default=1.0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--go", default=None)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--as-user", default=None)
    args = parser.parse_args(argv)
    if args.as_user:
        _drop_privileges(args.as_user)
    writer = StoreWriter(args.url, flush_interval=args.flush)
    print("ready", flush=True)
    if args.go:
        deadline = time.monotonic() + 120
        while not os.path.exists(args.go) and time.monotonic() < deadline:
            time.sleep(0.01)
    writer.open(run_info(args.run_id, layers=args.layers))
    t0 = time.time()
    for step in range(args.steps):
        writer.write([step_record(step, layers=args.layers, t0=t0)])
        print(f"step {step} {time.time()!r}", flush=True)
        if args.sleep:
            time.sleep(args.sleep)
    writer.close(RunStatus(time.time(), "succeeded"))
    stats = writer.stats()
    print(f"done {stats.dropped} {stats.flush_errors}", flush=True)
    return 0


def _drop_privileges(user: str) -> None:
    """Become `user` (root ignores file permissions, so a read-only store needs a plain user).

    The interpreter lives where only root may read, so everything the writer will import is
    loaded first by writing to a scratch store.
    """
    import pwd
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        warmup = StoreWriter(f"sqlite:///{scratch}/warmup.db", flush_interval=60.0)
        warmup.open(run_info("warmup"))
        warmup.write([step_record(0)])
        warmup.close(RunStatus(time.time(), "succeeded"))
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
