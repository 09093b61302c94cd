"""Side-by-side cost of rmswatch's hooks against a bare loop, TensorBoard and W&B (CPU).

Workload (issue 2): 8 x (Linear(1024,1024)+GELU) + Linear(1024,10), batch 64,
torch.set_num_threads(2), RMSprop(foreach=True). Variants run interleaved (the order rotates
every repeat) and the table reports the median over repeats of each run's mean ms/step.

    python benchmarks/bench_hooks.py                 # full run (~3-4 min)
    python benchmarks/bench_hooks.py --quick --variants bare,rmswatch-1,rmswatch-10
    python benchmarks/bench_hooks.py --memory        # peak RSS per variant, fresh processes
    python benchmarks/bench_hooks.py --blocks 25 --steps 10   # fine interleaving, shared machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmswatch.trainer_hooks import Monitor  # noqa: E402
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry  # noqa: E402

ALL_VARIANTS = ("bare", "rmswatch", "rmswatch-1", "rmswatch-10", "tensorboard", "wandb")
# "rmswatch" is the default watch(): budget mode (every=None, overhead=0.03); "rmswatch-b<pct>"
# sets another budget (rmswatch-b1: 1%). Also accepted: rmswatch-<every>c (kernel="compiled";
# compiled during warm-up), and an "s" suffix for stats_threads=1 (statistics on one thread).
Step = Callable[[], None]
# Budget-mode variants report what cadence they reached: full steps, steps, interval.
CADENCE: dict[str, dict[str, int]] = {}


class NullSink:
    """Receives every record on the sink thread and discards it (the thread's cost is real)."""

    def open(self, run: RunInfo) -> None: ...

    def write(self, items: Sequence[Telemetry]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: RunStatus) -> None: ...


def build(width: int, depth: int, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    layers.append(torch.nn.Linear(width, 10))
    model = torch.nn.Sequential(*layers)
    return model, torch.optim.RMSprop(model.parameters(), lr=1e-4, foreach=True)


@contextlib.contextmanager
def variant_loop(name: str, width: int, depth: int, batch: int) -> Iterator[Step]:
    """Yield a function doing one training step of `name`; tears the variant down afterwards."""
    model, opt = build(width, depth)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss()

    def core() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    with tempfile.TemporaryDirectory() as tmp:
        if name == "bare":

            def step() -> None:
                core()

            yield step
        elif name == "rmswatch" or name.startswith("rmswatch-"):
            # rmswatch-<every>[c][s]: c = kernel="compiled", s = stats_threads=1 (single thread)
            spec = name.split("-", 1)[1] if "-" in name else "b3"
            kernel = "compiled" if "c" in spec else "eager"
            threads: int | None = 1 if "s" in spec else None
            every: int | None = None
            overhead = 0.03
            if spec.startswith("b"):
                overhead = float(spec[1:].rstrip("cs")) / 100
            else:
                every = int(spec.rstrip("cs"))
            mon = Monitor(
                opt,
                model=model,
                every=every,
                overhead=overhead,
                sinks=[NullSink()],
                kernel=kernel,
                stats_threads=threads,
            )

            def step() -> None:
                mon.record_loss(core())

            try:
                yield step
            finally:
                CADENCE[name] = {
                    "steps": mon.step,
                    "full_steps": mon.full_steps,
                    "interval": mon.full_interval,
                }
                mon.close()
        elif name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(tmp)
            counter = [0]
            named = list(model.named_parameters())

            def step() -> None:
                core()
                counter[0] += 1
                for pname, p in named:
                    writer.add_histogram(f"grad/{pname}", p.grad, counter[0])
                    writer.add_histogram(
                        f"square_avg/{pname}", opt.state[p]["square_avg"], counter[0]
                    )

            try:
                yield step
            finally:
                writer.close()
        elif name == "wandb":
            os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp)
            import wandb

            run = wandb.init(project="rmswatch-bench", dir=tmp)
            wandb.watch(model, log="all", log_freq=1)

            def step() -> None:
                loss = core()
                run.log({"loss": float(loss.detach())})

            try:
                yield step
            finally:
                wandb.unwatch(model)
                run.finish()
        else:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(ALL_VARIANTS)}")


def time_variant(name: str, args: argparse.Namespace) -> float:
    """Mean ms/step over `args.steps` steps after `args.warmup` untimed ones."""
    with variant_loop(name, args.width, args.depth, args.batch) as step:
        for _ in range(args.warmup):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) * 1000 / args.steps


def time_blocks(variants: Sequence[str], args: argparse.Namespace) -> dict[str, list[float]]:
    """All variants live at once; `args.blocks` rounds of `args.steps` steps each, rotating.

    On a shared machine a burst of load lasts seconds; blocks of a few hundred ms, interleaved,
    let every variant see the same bursts, and the median over blocks drops them.
    """
    runs: dict[str, list[float]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        steps = {
            v: stack.enter_context(variant_loop(v, args.width, args.depth, args.batch))
            for v in variants
        }
        for v in variants:
            for _ in range(args.warmup):
                steps[v]()
        for block in range(args.blocks):
            order = list(variants[block % len(variants) :]) + list(
                variants[: block % len(variants)]
            )
            clock = time.process_time if args.cpu_time else time.perf_counter
            for v in order:
                start = clock()
                for _ in range(args.steps):
                    steps[v]()
                runs[v].append((clock() - start) * 1000 / args.steps)
            print(
                f"  block {block + 1}/{args.blocks} "
                + " ".join(f"{v}={runs[v][-1]:.1f}" for v in variants),
                file=sys.stderr,
                flush=True,
            )
    return runs


def exact_step_cost(args: argparse.Namespace) -> dict[str, float]:
    """Cost of the statistics alone: exact vs sampled steps (the cadence trade-off)."""
    model, opt = build(args.width, args.depth)
    x = torch.randn(args.batch, args.width)
    model(x).sum().backward()
    opt.step()
    out: dict[str, float] = {}
    for kernel in ("eager", "compiled"):
        mon = Monitor(opt, model=model, kernel=kernel)
        mon._compute(False)  # compiles (kernel="compiled") and warms the caches
        suffix = "" if kernel == "eager" else "_compiled"
        for label, exact in (("exact", True), ("sampled", False)):
            times = []
            for _ in range(max(5, 3 * args.repeats)):
                t0 = time.perf_counter()
                mon._compute(exact)  # with the monitor's own threading policy
                times.append((time.perf_counter() - t0) * 1000)
            out[label + suffix] = statistics.median(times)
        engine = mon._engine
        mon.close()
    # What the hooks keep between steps: sample indices and the reusable scratch buffers.
    kept = [s.sample for s in engine.slots if s.sample is not None]
    fused = engine.fused
    if fused is not None:
        kept += [t for pair in fused._scratch.values() for t in pair]
        kept += [fused._idx_scratch] if fused._idx_scratch is not None else []
    out["held_bytes"] = float(sum(t.numel() * t.element_size() for t in kept))
    out["state_bytes"] = float(
        sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values())
    )
    return out


def peak_rss(name: str, args: argparse.Namespace) -> int:
    """Peak RSS (bytes) of a fresh process running `name` for warmup+steps steps."""
    cmd = [
        sys.executable,
        __file__,
        "--_rss-child",
        name,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--width",
        str(args.width),
        "--depth",
        str(args.depth),
        "--batch",
        str(args.batch),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, 1 repeat")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--blocks",
        type=int,
        default=0,
        help="interleave all variants in this many blocks of --steps steps (noisy machines)",
    )
    parser.add_argument("--memory", action="store_true", help="also peak RSS per variant")
    parser.add_argument("--no-stats", action="store_true", help="skip the statistics-alone run")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="with --blocks: time blocks in process CPU time, not wall time (a loaded machine "
        "inflates wall time by waiting for a core; CPU time counts only work done)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--_rss-child", dest="rss_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        ms = time_variant(args.rss_child, args)
        del ms
        # VmHWM belongs to this process's own address space. ru_maxrss would survive fork+exec
        # and report the parent's peak instead.
        status = Path("/proc/self/status")
        hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
        if hwm:
            print(int(hwm[0].split()[1]) * 1024)
        else:
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return
    if args.quick:
        args.steps, args.warmup, args.repeats = 3, 1, 1
    variants = [v for v in args.variants.split(",") if v]
    runs: dict[str, list[float]] = {v: [] for v in variants}
    if args.blocks:
        runs = time_blocks(variants, args)
    for rep in range(0 if args.blocks else args.repeats):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for name in order:
            runs[name].append(time_variant(name, args))
            print(
                f"  repeat {rep + 1}/{args.repeats} {name:12s} {runs[name][-1]:8.1f} ms/step",
                file=sys.stderr,
                flush=True,
            )
    medians = {v: statistics.median(t) for v, t in runs.items()}
    base = medians.get("bare")
    params = sum(p.numel() for p in build(args.width, args.depth)[0].parameters())
    print(
        f"workload: {args.depth} x Linear({args.width},{args.width})+GELU + "
        f"Linear({args.width},10), {params / 1e6:.1f}M params, batch {args.batch}, "
        f"{args.threads} threads, RMSprop(foreach=True); {args.steps} timed steps/run, "
        + (
            f"median of {args.blocks} interleaved blocks (all variants live at once)"
            + ("; process CPU time, not wall time" if args.cpu_time else "")
            if args.blocks
            else f"median of {args.repeats} interleaved runs"
        )
    )
    # Paired ratios: each run against the bare run of the same repeat (adjacent in time), so a
    # burst of load from other processes on the machine hits numerator and denominator alike.
    paired = {
        v: statistics.median(t / b for t, b in zip(runs[v], runs["bare"], strict=True))
        for v in variants
        if "bare" in runs
    }
    print(f"{'variant':14s} {'ms/step':>9s} {'x bare':>8s} {'paired':>8s}   per-run ms/step")
    results: dict[str, Any] = {"medians_ms": medians, "runs_ms": runs, "paired_ratio": paired}
    for v in variants:
        ratio = f"{medians[v] / base:8.3f}" if base else "       -"
        pair = f"{paired[v]:8.3f}" if v in paired else "       -"
        per_run = " ".join(f"{t:.1f}" for t in runs[v])
        print(f"{v:14s} {medians[v]:9.1f} {ratio} {pair}   {per_run}")
    for v, seen in CADENCE.items():
        print(
            f"cadence {v}: {seen['full_steps']} full of {seen['steps']} steps "
            f"(1 in {seen['steps'] / max(seen['full_steps'], 1):.1f}); "
            f"scheduled interval at the end: {seen['interval']} steps"
        )
    results["cadence"] = CADENCE
    if any(v.startswith("rmswatch") for v in variants) and not args.no_stats:
        cost = exact_step_cost(args)
        results["stats_ms"] = cost
        print(
            f"statistics alone (median ms): exact step {cost['exact']:.1f} eager / "
            f"{cost['exact_compiled']:.1f} compiled, sampled step {cost['sampled']:.1f} eager / "
            f"{cost['sampled_compiled']:.1f} compiled (exact every 50 telemetry steps on CPU); "
            f"hook-held buffers {cost['held_bytes'] / 1e6:.2f} MB vs optimizer state "
            f"{cost['state_bytes'] / 1e6:.1f} MB"
        )
    if args.memory:
        rss = {v: peak_rss(v, args) for v in variants}
        results["peak_rss_bytes"] = rss
        for v in variants:
            delta = (rss[v] - rss["bare"]) / 1e6 if "bare" in rss else float("nan")
            print(f"peak RSS {v:14s} {rss[v] / 1e6:8.1f} MB  ({delta:+.1f} MB vs bare)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
