"""The JSON wire format between `HttpShipper` and `POST /api/v1/ingest` (version 1).

A batch is `{"version": 1, "run": {...}, "open": bool, "items": [...], "status": {...}}`; each
item has a `kind` (`step`, `validation`, `checkpoint`, `rank_check`, `system`, `sli`).
Non-finite floats travel as the strings "NaN", "Infinity", "-Infinity" so any JSON parser reads
them. `decode_batch` turns a parsed body into records: a bad envelope raises `WireError` naming
the field, a bad item is listed in `Batch.rejected` and the rest decoded.

The schema is derived from the record dataclasses (`dataclasses.fields`), not written out: a new
field on `StepRecord`, `LayerStats`, ... travels without a change here. `_RULES` adds only what a
dataclass cannot say: bounds, and the defaults an older client may leave out. A histogram's
edges travel once, on the run (`hist_edges`); decoding puts them back on every histogram.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from rmswatch._limits import LimitError, check_float, check_labels, check_text, check_time
from rmswatch._validation import StrictModel
from rmswatch._validation import WireError as WireError
from rmswatch.store.writes import SliSampleRecord
from rmswatch.trainer_hooks.records import (
    NONFINITE_KEYS,
    RMS_EDGES,
    CheckpointRecord,
    Histogram,
    LayerStats,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    Telemetry,
    ValidationRecord,
)
from rmswatch.trainer_hooks.screen import check_metric_name, check_run, clean_status, screen

WIRE_VERSION = 1

# Item kind -> record class; the order is the order `encode_item` tries them in.
KINDS: dict[str, type[Any]] = {
    "step": StepRecord,
    "validation": ValidationRecord,
    "checkpoint": CheckpointRecord,
    "rank_check": RankCheckRecord,
    "system": SystemSample,
    "sli": SliSampleRecord,
}
# Fields that stay off the wire: the edges live on the run, not on every histogram.
_OMITTED: dict[type[Any], frozenset[str]] = {Histogram: frozenset({"edges"})}

_NonNegative = Annotated[int, Field(ge=0)]
_Name = Annotated[str, Field(min_length=1, max_length=512)]
# What the dataclasses cannot say: bounds, key types, and defaults an older client may omit.
_RULES: dict[type[Any], dict[str, Any]] = {
    Histogram: {
        "counts": (list[_NonNegative], ...),
        "zeros": (int, Field(default=0, ge=0)),
        "nonfinite": (int, Field(default=0, ge=0)),
        "exact": (bool, True),
    },
    LayerStats: {
        "nonfinite_grad": (int, Field(default=0, ge=0)),
        "nonfinite_param": (int, Field(default=0, ge=0)),
        "nonfinite_state": (int, Field(default=0, ge=0)),
        "numel": (int, Field(default=0, ge=0)),
    },
    StepRecord: {
        "step": (int, Field(ge=0)),
        "nonfinite": (dict[Literal["grad", "param", "state", "loss"], _NonNegative], {}),
        "dropped_total": (int, Field(default=0, ge=0)),
        "rank": (int, Field(default=0, ge=0)),
        "world_size": (int, Field(default=1, ge=1)),
    },
    ValidationRecord: {
        "step": (int, Field(ge=0)),
        "name": (str, Field(default="val_loss", min_length=1, max_length=128)),
    },
    CheckpointRecord: {
        "step": (int, Field(ge=0)),
        "size_bytes": (int | None, Field(default=None, ge=0)),
    },
    RankCheckRecord: {
        "step": (int, Field(ge=0)),
        "ranks": (tuple[_NonNegative, ...], ()),
        "layers": (tuple[_Name, ...], ()),
        "world_size": (int, Field(default=1, ge=1)),
    },
    SystemSample: {
        "rss_bytes": (int, Field(ge=0)),
        "gpu_memory_bytes": (int | None, Field(default=None, ge=0)),
        "gpu_count": (int, Field(default=0, ge=0)),
    },
    SliSampleRecord: {
        "job": (str, Field(min_length=1, max_length=256)),
        "name": (str, Field(min_length=1, max_length=128)),
    },
    RunInfo: {
        "job": (str, Field(min_length=1, max_length=256)),
        "run_id": (str, Field(min_length=1, max_length=128)),
        "rank": (int, Field(default=0, ge=0)),
        "world_size": (int, Field(default=1, ge=1)),
        "hyperparameters": (list[dict[str, Any]], []),
        "every": (int, Field(default=1, ge=1)),
    },
}
# Map keys of record fields that are mappings of names (layers): bounded like other names.
_KEYS: dict[tuple[type[Any], str], Any] = {(StepRecord, "layers"): _Name}


def wire_fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    """The dataclass fields of `cls` that travel on the wire."""
    omitted = _OMITTED.get(cls, frozenset())
    return tuple(f for f in dataclasses.fields(cls) if f.name not in omitted)


# -- encoding ---------------------------------------------------------------------------------


def _num(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _encode_value(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_record(value)
    if isinstance(value, Mapping):
        return {str(k): _encode_value(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode_value(v) for v in value]
    return value


def _encode_record(record: Any) -> dict[str, Any]:
    return {f.name: _encode_value(getattr(record, f.name)) for f in wire_fields(type(record))}


def encode_item(item: Telemetry | SliSampleRecord) -> dict[str, Any]:
    for kind, cls in KINDS.items():
        if isinstance(item, cls):
            return {"kind": kind, **_encode_record(item)}
    raise TypeError(f"cannot encode {type(item).__name__} for the ingest API")


def encode_run(run: RunInfo) -> dict[str, Any]:
    from rmswatch.store.writes import jsonable

    body = _encode_record(run)
    body["hyperparameters"] = jsonable(list(run.hyperparameters))
    body["hist_edges"] = list(run.hist_edges)  # finite by construction; kept exact
    return body


def encode_batch(
    run: RunInfo | None,
    items: Sequence[Telemetry | SliSampleRecord],
    *,
    open_run: bool = False,
    status: RunStatus | None = None,
) -> bytes:
    body: dict[str, Any] = {"version": WIRE_VERSION, "items": [encode_item(i) for i in items]}
    if run is not None:
        body["run"] = encode_run(run)
        body["open"] = open_run
    if status is not None:
        body["status"] = _encode_record(status)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


# -- the derived schema -----------------------------------------------------------------------


class _M(StrictModel):
    """The base of every derived model: the project's one strict base (unknown keys refused)."""


_MODELS: dict[type[Any], type[_M]] = {}


def _wire_type(hint: Any, key: Any = str) -> Any:
    """The pydantic type of a record field's type: nested records become their wire models,
    tuples lists, mappings dicts."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return model_for(hint)
    if origin in (Union, types.UnionType):
        wired = tuple(_wire_type(a) for a in args)
        return Union[wired]  # noqa: UP007 (built from a tuple)
    if origin in (Mapping, dict, typing.Mapping):
        return dict.__class_getitem__((key, _wire_type(args[1])))
    if origin is tuple:
        return list.__class_getitem__(_wire_type(args[0]))
    return hint


def model_for(cls: type[Any], kind: str | None = None) -> type[_M]:
    """The pydantic model of a record class, built once from its dataclass fields."""
    if cls in _MODELS and kind is None:
        return _MODELS[cls]
    hints = typing.get_type_hints(cls)
    rules = _RULES.get(cls, {})
    spec: dict[str, Any] = {}
    if kind is not None:
        spec["kind"] = (Literal[kind], ...)
    for f in wire_fields(cls):
        if f.name in rules:
            spec[f.name] = rules[f.name]
            continue
        wired = _wire_type(hints[f.name], _KEYS.get((cls, f.name), str))
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        elif type(None) in typing.get_args(hints[f.name]):
            default = None  # optional values may be left out
        else:
            default = ...
        spec[f.name] = (wired, default)
    model = create_model(f"{cls.__name__}Wire", __base__=_M, **spec)
    if kind is None:
        _MODELS[cls] = model
    return model


_ITEM_MODELS = {kind: model_for(cls, kind) for kind, cls in KINDS.items()}
_ITEM: Any = Annotated[Union[tuple(_ITEM_MODELS.values())], Field(discriminator="kind")]  # noqa: UP007
_BATCH_SPEC: dict[str, Any] = {
    "version": (Literal[1], 1),
    "run": (model_for(RunInfo) | None, None),
    "open": (bool, False),
    # each item is validated on its own: one bad record must not cost the rest of the batch
    "items": (list[Any], []),
    "status": (model_for(RunStatus) | None, None),
}
_BatchIn = create_model("BatchWire", __base__=_M, **_BATCH_SPEC)
_ITEM_ADAPTER: TypeAdapter[Any] = TypeAdapter(_ITEM)


# -- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record of a batch that was not stored (`stored=False`), or stored without a part that
    the store can't take (`stored=True`, e.g. one layer); `field` is the path of the bad value."""

    index: int
    field: str
    detail: str
    stored: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "detail": self.detail,
                "stored": self.stored, "status": 422}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: one run's telemetry (optional) plus production SLI samples, and the
    records that were refused (`rejected`), each naming its field."""

    run: RunInfo | None
    open_run: bool
    telemetry: tuple[Telemetry, ...]
    sli_samples: tuple[SliSampleRecord, ...]
    status: RunStatus | None
    rejected: tuple[Rejected, ...] = ()


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif previous in ("layers", "labels", "nonfinite"):
            path += f"[{json.dumps(part)}]"  # a mapping key, not a field name
        elif part in KINDS and path.endswith("]"):
            previous = None
            continue  # the discriminator tag pydantic inserts, not a field of the record
        else:
            path += f".{part}" if path else str(part)
        previous = part
    return path


def _first_error(exc: ValidationError, prefix: Sequence[int | str] = ()) -> WireError:
    first = exc.errors()[0]
    field = _field_path((*prefix, *first["loc"])) or "(body)"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_short(got)})"
    return WireError(field, f"{first['msg']}{shown}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def decode_batch(body: Any) -> Batch:
    """Validate a parsed JSON body against the wire schema and the store's limits.

    A bad envelope (`run`, `status`, `version`, the body itself) raises WireError naming the
    field: nothing of the batch can be stored. A bad item is only that item: it lands in
    `Batch.rejected` (naming `items[i].field`) and the other items are decoded.
    """
    if not isinstance(body, Mapping):
        raise WireError("(body)", f"expected a JSON object, got {type(body).__name__}")
    try:
        batch: Any = _BatchIn.model_validate(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    run = None
    if batch.run is not None:
        run = _checked(_build(RunInfo, batch.run, "run", RMS_EDGES), check_run, "run")
    edges = run.hist_edges if run is not None else RMS_EDGES
    status = None
    if batch.status is not None:
        if run is None:
            raise WireError("status", "a run status needs the batch's `run`")
        status = _checked(_build(RunStatus, batch.status, "status", edges), clean_status, "")
    telemetry: list[Telemetry] = []
    slis: list[SliSampleRecord] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(batch.items):
        where = f"items[{index}]"
        try:
            item = _ITEM_ADAPTER.validate_python(raw)
            record = _build(KINDS[item.kind], item, where, edges)
        except ValidationError as exc:
            error = _first_error(exc, ("items", index))
            rejected.append(Rejected(index, error.field, error.message))
            continue
        except WireError as exc:
            rejected.append(Rejected(index, exc.field, exc.message))
            continue
        if isinstance(record, SliSampleRecord):
            try:
                slis.append(_checked_sli(record))
            except LimitError as exc:
                rejected.append(Rejected(index, f"{where}.{exc.field}", str(exc)))
            continue
        if run is None:
            rejected.append(
                Rejected(index, where, f"a {item.kind!r} record needs the batch's `run`")
            )
            continue
        kept, problems = screen(record)
        for problem in problems:
            field = f"{where}.{problem.field}"
            rejected.append(Rejected(index, field, str(problem), stored=kept is not None))
        if kept is not None:
            telemetry.append(kept)
    return Batch(
        run=run,
        open_run=batch.open,
        telemetry=tuple(telemetry),
        sli_samples=tuple(slis),
        status=status,
        rejected=tuple(rejected),
    )


_T = TypeVar("_T")


def _checked(value: _T, check: Callable[[_T], _T], prefix: str) -> _T:
    try:
        return check(value)
    except LimitError as exc:
        field = f"{prefix}.{exc.field}" if prefix else exc.field
        raise WireError(field, str(exc).removeprefix(f"{exc.field}: ")) from None


def _checked_sli(sample: SliSampleRecord) -> SliSampleRecord:
    check_text("job", sample.job, 256)
    check_metric_name("name", sample.name)
    check_float("value", sample.value)
    check_time("time", sample.time)
    return dataclasses.replace(sample, labels=check_labels("labels", sample.labels))


def _build(cls: type[Any], model: BaseModel, path: str, edges: tuple[float, ...]) -> Any:
    """The record of class `cls` from its validated wire model (nested records included)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in wire_fields(cls):
        values[f.name] = _value(hints[f.name], getattr(model, f.name), f"{path}.{f.name}", edges)
    if cls is Histogram:
        if len(values["counts"]) != len(edges) - 1:
            raise WireError(
                f"{path}.counts",
                f"expected {len(edges) - 1} counts for the run's {len(edges)} hist_edges, "
                f"got {len(values['counts'])}",
            )
        values["edges"] = tuple(edges)
    if cls is StepRecord:  # every kind present, so `record.nonfinite["grad"]` always reads
        values["nonfinite"] = {k: values["nonfinite"].get(k, 0) for k in NONFINITE_KEYS}
    return cls(**values)


def _value(hint: Any, value: Any, path: str, edges: tuple[float, ...]) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value, path, edges) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, path, edges)
    if origin in (Mapping, dict, typing.Mapping):
        return {k: _value(args[1], v, f"{path}[{json.dumps(k)}]", edges) for k, v in value.items()}
    if origin is tuple:
        return tuple(_value(args[0], v, f"{path}[{i}]", edges) for i, v in enumerate(value))
    return value
