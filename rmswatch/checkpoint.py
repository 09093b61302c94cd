"""Checkpoints you can resume from with confidence: atomic saves, a verified manifest, and a
resume-fidelity verdict (optimizer-state fingerprint, optionally one step replayed bit for bit).

One file, so that one rename makes it appear whole::

    MAGIC (16 bytes) | payload: a torch.save zip | manifest: UTF-8 JSON | u64 manifest length | END

The payload holds `model`, `optimizer`, `step`, `extra` and the replay batch; it is read back
with `torch.load(weights_only=True)`. The manifest holds the schema version, torch version,
step, world size, the payload's size and sha256, and the optimizer-state fingerprint
(`rmswatch.trainer_hooks.fingerprint`). Saving streams through the hash, loading verifies it
before unpickling anything; neither holds a second copy of the payload in memory.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import struct
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import torch

from rmswatch.trainer_hooks.fingerprint import (
    Fingerprint,
    checksum,
    optimizer_fingerprint,
    parameter_names,
)

if TYPE_CHECKING:
    from rmswatch.trainer_hooks.monitor import Monitor

from rmswatch._validation import CheckpointError as CheckpointError

SCHEMA_VERSION = 1
MAGIC = b"RMSWATCH-CKPT-1\n"
END = b"RMSWATCH-END-01\n"
_TRAILER = struct.Struct(">Q")
_CHUNK = 1 << 20
# A replay step runs under this RNG seed at save and at load, so dropout & co. agree.
REPLAY_SEED = 20261203

ReplayFn = Callable[[torch.nn.Module, Any], torch.Tensor]
FidelityStatus = Literal["verified", "mismatch", "unverified"]


@dataclass(frozen=True, slots=True)
class Fidelity:
    """How faithfully the resumed state reproduces the saved one.

    `status`: "verified" (the fingerprint matches, and so does the replayed step when one was
    run), "mismatch" (see `mismatched`), or "unverified" (a plain torch.save file: no manifest to
    compare with). `replay`: "match", "mismatch", "not saved" (no replay batch in the file) or
    "not run" (no `replay=` function given to `load_checkpoint`).
    """

    status: FidelityStatus
    fingerprint_match: bool | None
    replay: Literal["match", "mismatch", "not saved", "not run"]
    mismatched: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"

    @property
    def summary(self) -> str:
        if self.status == "unverified":
            return "resume fidelity unverified: no rmswatch manifest (a plain torch.save file)"
        replay = f"; replayed step {self.replay}" if self.replay in ("match", "mismatch") else ""
        if self.status == "verified":
            return f"resume fidelity verified: optimizer-state fingerprint matches{replay}"
        return f"resume fidelity MISMATCH{replay}: " + "; ".join(self.mismatched)


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What `load_checkpoint` restored: the step to continue from, `extra`, and `fidelity`."""

    path: str
    step: int
    extra: Mapping[str, Any]
    fidelity: Fidelity
    world_size: int = 1
    torch_version: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    manifest: Mapping[str, Any] = field(default_factory=dict)


# -- monitors: a checkpoint is recorded through the monitor watching its optimizer --------------

# Weak both ways: a monitor holds its optimizer, and neither may be kept alive from here.
_watching: weakref.WeakKeyDictionary[torch.optim.Optimizer, weakref.ref[Monitor]] = (
    weakref.WeakKeyDictionary()
)
# Loads that happened before `watch()`: delivered by the monitor that watch() builds next.
_pending_loads: weakref.WeakKeyDictionary[torch.optim.Optimizer, list[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def register_monitor(optimizer: torch.optim.Optimizer, monitor: Monitor) -> None:
    """Called by `watch()`: checkpoints of `optimizer` are recorded through `monitor` from now."""
    _watching[optimizer] = weakref.ref(monitor)
    for event in _pending_loads.pop(optimizer, []):
        event.pop("resumed", None)
        monitor.record_checkpoint("load", **event)


def pending_resume_step(optimizer: torch.optim.Optimizer) -> int | None:
    """The step of the last checkpoint loaded into `optimizer` before `watch()`, if any."""
    events = _pending_loads.get(optimizer) or []
    ok = [e["step"] for e in events if e.get("resumed")]
    return int(ok[-1]) if ok else None


def _record(
    optimizer: torch.optim.Optimizer, monitor: Monitor | None, action: str, **event: Any
) -> None:
    if monitor is None:
        ref = _watching.get(optimizer)
        monitor = ref() if ref is not None else None
    resumed = event.pop("resumed", False)
    if monitor is not None and not monitor.closed:
        monitor.record_checkpoint(action, **event)  # type: ignore[arg-type]
    elif action == "load":
        _pending_loads.setdefault(optimizer, []).append({**event, "resumed": resumed})


# -- save ---------------------------------------------------------------------------------------


class _HashingWriter:
    """Counts and hashes the bytes torch.save writes on their way to the file."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _file_mode() -> int:
    """0o666 less the process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0o644


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: Mapping[str, Any] | None = None,
    *,
    replay_batch: Any = None,
    replay: ReplayFn | None = None,
    monitor: Monitor | None = None,
) -> int:
    """Write model, optimizer state, `step` and `extra` to `path` atomically; returns its size.

    The file appears whole or not at all: written to a temporary file in the same directory,
    fsynced, renamed over `path`, and the directory fsynced. A save that fails or is killed
    midway leaves the previous checkpoint at `path` intact. `extra` may hold what
    `torch.load(weights_only=True)` reads back: tensors, numbers, strings, lists, dicts.

    Resume fidelity: with `replay_batch` and `replay` (`replay(model, batch) -> loss`), one step
    is run on copies of model and optimizer and its parameters' checksums go into the manifest,
    so that `load_checkpoint(..., replay=replay)` can check the resumed state steps bit for bit
    the same. It costs one copy of model and optimizer state and one step.

    Under torch.distributed only rank 0 writes (the others return 0 at once); the manifest
    records the world size. The save's size and latency go to the monitor watching `optimizer`.
    """
    path = Path(path)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(str(path), f"step={step!r}: expected an integer >= 0")
    if (replay_batch is None) != (replay is None):
        raise CheckpointError(
            str(path), "replay_batch and replay go together: give both or neither"
        )
    rank, world_size = _world()
    if rank != 0:
        return 0
    started = time.perf_counter()
    try:
        size = _save(path, model, optimizer, step, dict(extra or {}), replay_batch, replay)
    except BaseException as exc:
        _record(
            optimizer, monitor, "save", step=step, ok=False,
            seconds=time.perf_counter() - started, path=str(path),
            detail=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
        if isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
            raise
        raise CheckpointError(str(path), f"save failed: {type(exc).__name__}: {exc}") from exc
    _record(
        optimizer, monitor, "save", step=step, ok=True, seconds=time.perf_counter() - started,
        size_bytes=size, path=str(path),
    )  # fmt: skip
    return size


def _save(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any],
    replay_batch: Any,
    replay: ReplayFn | None,
) -> int:
    _, world_size = _world()
    payload: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "extra": extra,
    }
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "torch_version": torch.__version__,
        "step": step,
        "world_size": world_size,
        "created_at": time.time(),
        "fingerprint": optimizer_fingerprint(optimizer, model).to_json(),
        "parameters": [
            {"name": name, "shape": list(p.shape), "dtype": str(p.dtype).removeprefix("torch.")}
            for name, p in parameter_names(optimizer, model)
        ],
    }
    if replay is not None:
        payload["replay_batch"] = replay_batch
        checksums = _replayed(model, optimizer, replay, replay_batch)
        manifest["replay"] = {"seed": REPLAY_SEED, "param_checksums": checksums}
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.fchmod(fd, _file_mode())  # mkstemp's 0600: a checkpoint gets a plain file's mode
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(MAGIC)
            writer = _HashingWriter(file)
            torch.save(payload, writer)  # type: ignore[arg-type]
            manifest["payload_bytes"] = writer.size
            manifest["payload_sha256"] = writer.sha256.hexdigest()
            encoded = json.dumps(manifest, sort_keys=True).encode()
            file.write(encoded)
            file.write(_TRAILER.pack(len(encoded)))
            file.write(END)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)
    return path.stat().st_size


def _replayed(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, replay: ReplayFn, batch: Any
) -> list[int]:
    """Parameter checksums after one step on copies of model and optimizer (originals untouched)."""
    model_copy = copy.deepcopy(model)
    originals = list(model.parameters())
    index = {id(p): i for i, p in enumerate(originals)}
    copies = list(model_copy.parameters())
    groups = []
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            if id(p) not in index:
                raise ValueError("replay needs every optimizer parameter to belong to the model")
            params.append(copies[index[id(p)]])
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    optimizer_copy = type(optimizer)(groups, **optimizer.defaults)
    optimizer_copy.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(REPLAY_SEED)
        optimizer_copy.zero_grad(set_to_none=True)
        loss = replay(model_copy, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer_copy.step()
    return [checksum(p) for g in optimizer_copy.param_groups for p in g["params"]]


# -- load ---------------------------------------------------------------------------------------


class _Window(io.RawIOBase):
    """A read-only, seekable view of `length` bytes of `file` from `start` (the payload)."""

    def __init__(self, file: IO[bytes], start: int, length: int) -> None:
        self._file, self._start, self._length, self._pos = file, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        data = self._file.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _chunks(file: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    file.seek(start)
    left = length
    while left > 0:
        data = file.read(min(_CHUNK, left))
        if not data:
            return
        left -= len(data)
        yield data


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an rmswatch checkpoint, None for another file (e.g. plain torch.save)."""
    with open(path, "rb") as file:
        return _read_manifest(Path(path), file)


def _read_manifest(path: Path, file: IO[bytes]) -> dict[str, Any] | None:
    if file.read(len(MAGIC)) != MAGIC:
        return None
    size = file.seek(0, io.SEEK_END)
    tail = len(END) + _TRAILER.size
    if size < len(MAGIC) + tail:
        raise CheckpointError(str(path), "truncated: the file ends before its manifest")
    file.seek(size - tail)
    raw = file.read(tail)
    if raw[_TRAILER.size :] != END:
        raise CheckpointError(str(path), "truncated or corrupt: no end marker after the manifest")
    (length,) = _TRAILER.unpack(raw[: _TRAILER.size])
    manifest_at = size - tail - length
    if length <= 0 or manifest_at < len(MAGIC):
        raise CheckpointError(str(path), "corrupt: manifest length out of range")
    file.seek(manifest_at)
    try:
        manifest: dict[str, Any] = json.loads(file.read(length))
    except ValueError as exc:
        raise CheckpointError(str(path), f"corrupt manifest: {exc}") from exc
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise CheckpointError(str(path), "corrupt manifest: no schema_version")
    manifest["_payload_at"] = len(MAGIC)
    manifest["_payload_span"] = manifest_at - len(MAGIC)
    return manifest


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    replay: ReplayFn | None = None,
    monitor: Monitor | None = None,
    map_location: str | torch.device | None = None,
) -> CheckpointInfo:
    """Restore model and optimizer from `path`, verify the resume, and say how faithful it is.

    Refused with `CheckpointError` (naming the file and the reason): a bad checksum or truncated
    file, no optimizer state (also a plain `torch.save` file without one), a schema newer than
    this rmswatch reads, a parameter set that differs from the saved one. After loading, the
    optimizer-state fingerprint is compared with the manifest's; with `replay` (the function
    given to `save_checkpoint`) one step is replayed on the saved batch and the parameters
    compared bit for bit. The verdict is `.fidelity`; it is recorded through the monitor
    watching `optimizer` (or, before `watch()`, by the monitor `watch()` builds next), and a
    mismatch is recorded as a failed load, which raises the resume-mismatch alert.
    """
    path = Path(path)
    started = time.perf_counter()
    seen: dict[str, int] = {}  # the step, once read: a refused load is recorded at it
    try:
        info = _load(path, model, optimizer, replay, map_location, started, seen)
    except CheckpointError as exc:
        _record(
            optimizer, monitor, "load", step=seen.get("step", 0), ok=False,
            seconds=time.perf_counter() - started, path=str(path), detail=exc.reason,
        )  # fmt: skip
        raise
    _record(
        optimizer, monitor, "load", step=info.step, ok=info.fidelity.ok, seconds=info.seconds,
        size_bytes=info.size_bytes, path=str(path), detail=info.fidelity.summary, resumed=True,
    )  # fmt: skip
    return info


def _load(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    replay: ReplayFn | None,
    map_location: str | torch.device | None,
    started: float,
    seen: dict[str, int],
) -> CheckpointInfo:
    where = str(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, also on error
    except OSError as exc:
        raise CheckpointError(where, f"cannot open: {exc.strerror or exc}") from exc
    with file:
        size = os.fstat(file.fileno()).st_size
        manifest = _read_manifest(path, file)
        if manifest is None:
            payload = _torch_load(where, file, 0, size, map_location)
        else:
            _check_manifest(where, manifest, file)
            payload = _torch_load(
                where, file, manifest["_payload_at"], manifest["payload_bytes"], map_location
            )
    if isinstance(payload.get("step"), int) and payload["step"] >= 0:
        seen["step"] = payload["step"]
    state, step = _check_payload(where, payload)
    if manifest is not None:
        _check_parameter_set(where, manifest, model, optimizer)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())  # torch's message spans lines
        raise CheckpointError(where, f"mismatched parameter set: {reason}") from exc
    fidelity = _fidelity(manifest, payload, model, optimizer, replay)
    return CheckpointInfo(
        path=where,
        step=step,
        extra=dict(payload.get("extra") or {}),
        fidelity=fidelity,
        world_size=int(manifest["world_size"]) if manifest else 1,
        torch_version=str(manifest["torch_version"]) if manifest else "",
        size_bytes=size,
        seconds=time.perf_counter() - started,
        manifest={k: v for k, v in (manifest or {}).items() if not k.startswith("_")},
    )


def _check_manifest(where: str, manifest: dict[str, Any], file: IO[bytes]) -> None:
    version = manifest["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CheckpointError(
            where,
            f"schema version {version!r} is newer than this rmswatch reads (up to "
            f"{SCHEMA_VERSION}); upgrade rmswatch to load it",
        )
    span = manifest["_payload_span"]
    if manifest.get("payload_bytes") != span:
        raise CheckpointError(
            where, f"truncated or corrupt: payload is {span} bytes, manifest says "
            f"{manifest.get('payload_bytes')}",
        )  # fmt: skip
    digest = hashlib.sha256()
    for chunk in _chunks(file, manifest["_payload_at"], span):
        digest.update(chunk)
    if digest.hexdigest() != manifest.get("payload_sha256"):
        raise CheckpointError(
            where,
            f"bad checksum: payload sha256 {digest.hexdigest()[:16]}... does not match the "
            f"manifest's {str(manifest.get('payload_sha256'))[:16]}...; the file is corrupt",
        )


def _torch_load(
    where: str, file: IO[bytes], start: int, length: int, map_location: Any
) -> dict[str, Any]:
    try:
        loaded = torch.load(
            io.BufferedReader(_Window(file, start, length), _CHUNK),
            weights_only=True,
            map_location=map_location,
        )
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise CheckpointError(
            where, f"not a loadable checkpoint: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(loaded, dict):
        raise CheckpointError(
            where, f"optimizer state missing: the file holds a {type(loaded).__name__}, not a "
            "checkpoint with 'model' and 'optimizer'",
        )  # fmt: skip
    return loaded


def _check_payload(where: str, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    optimizer_state = payload.get("optimizer")
    if not isinstance(optimizer_state, dict) or "state" not in optimizer_state:
        held = ", ".join(sorted(map(str, payload))[:6]) or "nothing"
        raise CheckpointError(
            where,
            f"optimizer state missing (the file holds {held}): resuming would restart RMSProp's "
            "square_avg at zero; save with rmswatch.save_checkpoint(path, model, optimizer, step)",
        )
    step = payload.get("step", 0)
    if isinstance(step, torch.Tensor):
        step = int(step)
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(where, f"step={step!r} in the file: expected an integer >= 0")
    if not optimizer_state["state"] and step > 0:
        raise CheckpointError(
            where, f"optimizer state missing: no per-parameter state at step {step}",
        )  # fmt: skip
    if not isinstance(payload.get("model"), dict):
        raise CheckpointError(where, "model state missing: no 'model' state dict in the file")
    return payload, step


def _check_parameter_set(
    where: str,
    manifest: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    saved = {item["name"]: item["shape"] for item in manifest.get("parameters", [])}
    here = {name: list(p.shape) for name, p in parameter_names(optimizer, model)}
    if list(saved) == list(here) and saved == here:
        return
    missing = [n for n in saved if n not in here][:5]
    added = [n for n in here if n not in saved][:5]
    reshaped = [f"{n} {saved[n]} -> {here[n]}" for n in saved if n in here and saved[n] != here[n]]
    detail = f"saved {len(saved)} parameters, this optimizer has {len(here)}"
    if missing:
        detail += f"; not here: {', '.join(missing)}"
    if added:
        detail += f"; not in the file: {', '.join(added)}"
    if reshaped:
        detail += f"; other shapes: {', '.join(reshaped[:5])}"
    if not (missing or added or reshaped):
        detail += "; same names in a different order"
    raise CheckpointError(where, f"mismatched parameter set: {detail}")


def _fidelity(
    manifest: dict[str, Any] | None,
    payload: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    replay: ReplayFn | None,
) -> Fidelity:
    if manifest is None:
        return Fidelity("unverified", None, "not saved")
    saved = Fingerprint.from_json(manifest["fingerprint"])
    mismatched = saved.mismatches(optimizer_fingerprint(optimizer, model))
    fingerprint_match = not mismatched
    replay_verdict: Literal["match", "mismatch", "not saved", "not run"] = "not saved"
    if "replay" in manifest and "replay_batch" in payload:
        replay_verdict = "not run"
        if replay is not None:
            got = _replayed(model, optimizer, replay, payload["replay_batch"])
            expected = [int(c) for c in manifest["replay"]["param_checksums"]]
            replay_verdict = "match" if got == expected else "mismatch"
            if replay_verdict == "mismatch":
                names = [name for name, _ in parameter_names(optimizer, model)]
                differ = [n for n, a, b in zip(names, got, expected, strict=False) if a != b]
                mismatched.append(f"replayed step differs in {', '.join(differ[:5])}")
    status: FidelityStatus = "mismatch" if mismatched else "verified"
    return Fidelity(status, fingerprint_match, replay_verdict, tuple(mismatched))
