"""torch.distributed support: one run for all ranks, and the optimizer-state desync check.

Telemetry never uses the job's own process group. At `watch()` every rank joins one extra gloo
group (CPU tensors, its own timeout), rank 0's run_id is broadcast over it once, and every
`desync_every` steps each rank contributes one small int64 tensor (its step, then per layer the
square_avg and parameter checksums and the square_avg norm's bits) to an asynchronous
`all_gather`. The training thread never waits on it: the result is picked up at a later step
once `is_completed()`; a gather whose ranks were at different steps is skipped, not compared;
when ranks step unevenly and gathers pile up (more than `MAX_PENDING` unanswered), the checks
stop for the rest of the run and say so, instead of blocking.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from rmswatch.trainer_hooks.fingerprint import bitsum, rms_state_key
from rmswatch.trainer_hooks.records import RankCheckRecord

log = logging.getLogger(__name__)

MAX_PENDING = 2
DEFAULT_DESYNC_EVERY = 100
DEFAULT_TIMEOUT_SECONDS = 60.0
_HEADER = 2  # step, number of layers


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised default group; (0, 1) outside torch.distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def refuse_sharded_parameters(params: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    """Refuse DTensor (FSDP2, tensor parallel) and FSDP1 flat parameters, naming the first one.

    Their local tensors are shards: per-layer norms and histograms computed on them would be
    one rank's piece presented as the layer's number. rmswatch does not reduce shards across
    ranks (yet), so it refuses instead of showing a wrong number.
    """
    dtensor: type | None = None
    flat: type | None = None
    if torch.distributed.is_available():
        try:
            from torch.distributed.tensor import DTensor as dtensor
        except ImportError:  # pragma: no cover - builds without the tensor package
            dtensor = None
        try:
            from torch.distributed.fsdp._flat_param import FlatParameter as flat
        except ImportError:  # pragma: no cover
            flat = None
    for name, p in zip(names, params, strict=True):
        if dtensor is not None and isinstance(p, dtensor):
            raise TypeError(
                f"rmswatch does not support DTensor parameters (FSDP2 fully_shard, tensor "
                f"parallel): {name!r} is placed as {tuple(getattr(p, 'placements', ()))}, and "
                "statistics of a local shard are not the layer's; watch a DDP or single-process "
                "model instead"
            )
        if (flat is not None and isinstance(p, flat)) or getattr(p, "_is_flat_param", False):
            raise TypeError(
                f"rmswatch does not support FSDP flat parameters: {name!r} is a FlatParameter "
                "(FullyShardedDataParallel), whose local tensor is a shard of many layers; "
                "watch a DDP or single-process model instead"
            )


@dataclass
class _Gather:
    step: int
    work: Any
    outputs: list[torch.Tensor]


class RankChecks:
    """The telemetry group of one monitor and its desync checks (see the module docstring)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        names: Sequence[str],
        params: Sequence[torch.Tensor],
        *,
        desync_every: int | None = DEFAULT_DESYNC_EVERY,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        dist = torch.distributed
        self.rank, self.world_size = world()
        self._optimizer = optimizer
        self._names = list(names)
        self._params = list(params)
        self._key = rms_state_key(optimizer)
        self._every = desync_every
        self._clock = clock
        self._pending: deque[_Gather] = deque()
        self.checks = 0
        self.skipped = 0
        self.mismatches = 0
        self.stopped: str | None = None
        # every rank must build it, in the same order: it is created at watch()
        self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))

    @classmethod
    def join(
        cls,
        optimizer: torch.optim.Optimizer,
        names: Sequence[str],
        params: Sequence[torch.Tensor],
        **options: Any,
    ) -> RankChecks | None:
        """The checks of this rank, or None outside a distributed job of more than one rank."""
        _, world_size = world()
        if world_size <= 1:
            return None
        return cls(optimizer, names, params, **options)

    def agree_run_id(self, proposal: str) -> str:
        """Rank 0's `proposal`, the same on every rank (one broadcast, at watch())."""
        box = [proposal]
        torch.distributed.broadcast_object_list(box, src=0, group=self._group)
        return str(box[0])

    # -- desync check ----------------------------------------------------------------------------

    def fingerprint(self, step: int) -> torch.Tensor:
        """[step, n, then per layer: square_avg checksum, param checksum, norm bits] (int64)."""
        parts = [torch.tensor([step, len(self._params)], dtype=torch.int64)]
        rows = []
        with torch.no_grad():
            for p in self._params:
                state = self._optimizer.state.get(p, {})
                sq = state.get(self._key) if self._key is not None else None
                if isinstance(sq, torch.Tensor):
                    norm = torch.linalg.vector_norm(sq.detach(), dtype=torch.float64)
                    rows.append(
                        torch.stack([bitsum(sq), bitsum(p), norm.reshape(()).view(torch.int64)])
                    )
                else:
                    rows.append(
                        torch.stack(
                            [
                                torch.zeros((), dtype=torch.int64, device=p.device),
                                bitsum(p),
                                torch.tensor(-1.0, dtype=torch.float64, device=p.device).view(
                                    torch.int64
                                ),
                            ]
                        )
                    )
        if rows:
            parts.append(torch.stack(rows).reshape(-1).cpu())
        return torch.cat(parts)

    def after_step(self, step: int) -> list[RankCheckRecord]:
        """Start a check at every `desync_every`-th step; return the checks that completed."""
        done = self._collect()
        if self._every is None or self.stopped is not None or step % self._every:
            return done
        if len(self._pending) >= MAX_PENDING:
            self.stopped = (
                f"desync checks stopped at step {step}: {len(self._pending)} checks unanswered "
                "(ranks stepping unevenly, or one has stopped)"
            )
            log.warning("rmswatch: %s", self.stopped)
            return [*done, self._record(step, "skipped", (), (), self.stopped)]
        mine = self.fingerprint(step)
        outputs = [torch.empty_like(mine) for _ in range(self.world_size)]
        work = torch.distributed.all_gather(outputs, mine, group=self._group, async_op=True)
        self._pending.append(_Gather(step, work, outputs))
        return done

    def close(self) -> list[RankCheckRecord]:
        """Checks that completed by now; those still waiting are abandoned, never waited on."""
        return self._collect()

    def _collect(self) -> list[RankCheckRecord]:
        out = []
        while self._pending and self._pending[0].work.is_completed():
            gather = self._pending.popleft()
            try:
                gather.work.wait()  # completed: returns at once, raises if it failed
            except Exception as exc:  # noqa: BLE001 - a failed check is reported, never raised
                self.stopped = f"desync checks stopped: the gather failed ({exc})"
                self._pending.clear()
                out.append(self._record(gather.step, "skipped", (), (), self.stopped))
                break
            record = self._compare(gather)
            if record is not None:
                out.append(record)
        return out

    def _compare(self, gather: _Gather) -> RankCheckRecord | None:
        steps = [int(t[0]) for t in gather.outputs]
        if len(set(steps)) > 1 or any(int(t[1]) != len(self._params) for t in gather.outputs):
            self.skipped += 1
            detail = "ranks at different steps (" + ", ".join(map(str, steps)) + "): not compared"
            return self._record(gather.step, "skipped", (), (), detail)
        self.checks += 1
        tables = [t[_HEADER:].reshape(-1, 3) for t in gather.outputs]
        reference = tables[0]
        ranks: list[int] = []
        layers: list[int] = []
        for rank, table in enumerate(tables[1:], start=1):
            differs = (table[:, :2] != reference[:, :2]).any(dim=1)
            if bool(differs.any()):
                ranks.append(rank)
                layers += [int(i) for i in differs.nonzero().reshape(-1)]
        if not ranks:
            return self._record(gather.step, "ok", (), (), "")
        self.mismatches += 1
        layer_ids = sorted(set(layers))
        names = tuple(self._names[i] for i in layer_ids)
        first = layer_ids[0]
        norms = ", ".join(f"rank {r}: {_norm(tables[r][first, 2])}" for r in [0, *ranks])
        detail = (
            f"optimizer state desync at step {gather.step}: rank(s) "
            f"{', '.join(map(str, ranks))} differ from rank 0 in {len(names)} layer(s): "
            f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''} "
            f"({names[0]} square_avg norm {norms})"
        )
        log.error("rmswatch: %s", detail)
        return self._record(gather.step, "desync", (0, *ranks), names, detail)

    def _record(
        self,
        step: int,
        status: str,
        ranks: tuple[int, ...],
        layers: tuple[str, ...],
        detail: str,
    ) -> RankCheckRecord:
        return RankCheckRecord(
            step=step,
            time=self._clock(),
            status=status,  # type: ignore[arg-type]
            ranks=ranks,
            layers=layers,
            detail=detail,
            world_size=self.world_size,
        )


def _norm(bits: torch.Tensor) -> str:
    value = float(bits.reshape(1).view(torch.float64)[0])
    return "no state" if value < 0 or math.isnan(value) else f"{value:.9g}"
