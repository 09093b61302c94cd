"""What the pre-clip gradient norm costs: the explicit line vs an automatic grad hook.

Same workload as bench_hooks.py (8 x Linear(1024,1024)+GELU, 8.4M params, batch 64, 2 threads,
RMSprop(foreach=True)); every variant clips with clip_grad_norm_(max_norm=1.0), as the loops
this is for do. Variants, interleaved in rotating blocks, all alive at once:

    clip            the loop alone
    hook-every      + register_post_accumulate_grad_hook on every parameter computing the
                    gradient's norm on every backward (an automatic pre-clip path, always on)
    hook-tel10      the same hook, working only before telemetry steps at every=10
    monitor10       + rmswatch Monitor(every=10)
    monitor10+rec   + Monitor(every=10) and `monitor.record_grad_norm(total)` (the explicit line)
    monitor10+hooks + Monitor(every=10, grad_hooks=True): the automatic path rmswatch ships

    python benchmarks/bench_preclip.py --blocks 15 --steps 10

Besides wall time it reports process CPU time per step (`time.process_time`, all threads):
on a machine shared with other jobs, wall time mostly measures the neighbours, CPU time
mostly measures the work.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from rmswatch.trainer_hooks.monitor import Monitor
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry

VARIANTS = ("clip", "hook-every", "hook-tel10", "monitor10", "monitor10+rec", "monitor10+hooks")


class NullSink:
    def open(self, run: RunInfo) -> None: ...

    def write(self, items: Sequence[Telemetry]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: RunStatus) -> None: ...


@contextlib.contextmanager
def variant(name: str, width: int, depth: int, batch: int) -> Iterator[Callable[[], None]]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    layers.append(torch.nn.Linear(width, 10))
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4, foreach=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss()
    monitor = (
        Monitor(opt, model=model, every=10, sinks=[NullSink()], grad_hooks=name.endswith("+hooks"))
        if name.startswith("monitor")
        else None
    )
    norms: dict[int, torch.Tensor] = {}
    counter = [0]
    handles = []
    if name.startswith("hook"):
        gated = name == "hook-tel10"

        def hook(p: torch.Tensor) -> None:
            if gated and counter[0] % 10:
                return
            assert p.grad is not None
            norms[id(p)] = torch.linalg.vector_norm(p.grad)

        handles = [p.register_post_accumulate_grad_hook(hook) for p in model.parameters()]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if monitor is not None and name.endswith("+rec"):
            monitor.record_grad_norm(total, max_norm=1.0)
        opt.step()
        counter[0] += 1
        if monitor is not None:
            monitor.record_loss(loss)

    try:
        yield step
    finally:
        for handle in handles:
            handle.remove()
        if monitor is not None:
            monitor.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with contextlib.ExitStack() as stack:
        steps = {
            v: stack.enter_context(variant(v, args.width, args.depth, args.batch)) for v in VARIANTS
        }
        for v in VARIANTS:
            for _ in range(args.warmup):
                steps[v]()
        for block in range(args.blocks):
            k = block % len(VARIANTS)
            for v in VARIANTS[k:] + VARIANTS[:k]:
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    steps[v]()
                runs[v].append((time.perf_counter() - start) * 1000 / args.steps)
                cpu[v].append((time.process_time() - start_cpu) * 1000 / args.steps)
            print(
                f"  block {block + 1}/{args.blocks} "
                + " ".join(f"{v}={runs[v][-1]:.1f}" for v in VARIANTS),
                file=sys.stderr,
                flush=True,
            )
    print(
        f"median of {args.blocks} interleaved blocks of {args.steps} steps, "
        f"width {args.width}, depth {args.depth}, {args.threads} thread(s)\n"
    )
    print(
        "| variant | wall ms/step | wall × clip, paired | CPU ms/step | CPU × clip, paired "
        "| CPU vs monitor10, paired |"
    )
    print("|---|---|---|---|---|---|")

    def paired(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    for v in VARIANTS:
        print(
            f"| {v} | {statistics.median(runs[v]):.1f} | {paired(runs[v], runs['clip']):.3f} | "
            f"{statistics.median(cpu[v]):.1f} | {paired(cpu[v], cpu['clip']):.3f} | "
            f"{paired(cpu[v], cpu['monitor10']):.3f} |"
        )


if __name__ == "__main__":
    main()
