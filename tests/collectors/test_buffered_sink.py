"""The delivery contract `BufferedSink` gives its subclasses, checked through a sink whose
destination is an in-memory list that fails on request (no store or server is involved)."""

from __future__ import annotations

from rmswatch.collectors._buffered import BufferedSink, RetryLater
from rmswatch.trainer_hooks.records import RunStatus, StepRecord, Telemetry
from tests.factories import T0, run_info, step_record


class ListSink(BufferedSink):
    """Delivers into `self.delivered` at most `fits` records at a time (the rest of a batch goes
    back to the buffer, as HttpShipper does with a body over its byte limit); the next `fail`
    deliveries raise RetryLater."""

    def __init__(self, *, batch_records: int = 3, max_buffer: int = 100, fits: int = 100) -> None:
        super().__init__(
            flush_interval=3600.0,
            max_buffer=max_buffer,
            batch_records=batch_records,
            clock=lambda: 0.0,
            close_timeout=0.0,
            thread_name="test-list-sink",
        )
        self.delivered: list[int] = []
        self.statuses: list[str] = []
        self.fits = fits
        self.fail = 0
        self.lost: list[int] = []

    def _deliver_batch(self, batch: list[Telemetry]) -> None:
        self._put_back(batch[self.fits :], drop_overflow=False)
        del batch[self.fits :]
        if self.fail:
            self.fail -= 1
            raise RetryLater("destination down")
        self.delivered += [_step(r) for r in batch]

    def _deliver_status(self, status: RunStatus) -> None:
        self.statuses.append(status.status)

    def _backoff(self, failures: int) -> float:
        return 1.0

    def _report_lost(self, count: int) -> None:
        self.lost.append(count)


def _step(record: Telemetry) -> int:
    assert isinstance(record, StepRecord)
    return record.step


def test_a_failed_batch_goes_back_to_the_front_and_is_delivered_once_in_order() -> None:
    sink = ListSink()
    sink.open(run_info())
    sink.write([step_record(s) for s in range(7)])
    sink.fail = 1
    assert not sink._deliver(force=True)
    assert sink.delivered == [] and sink._buffered() == 7 and sink._last_error == "destination down"
    assert sink._deliver(force=True)
    assert sink.delivered == list(range(7))
    sink.close(RunStatus(T0, "succeeded"))


def test_a_batch_shortened_to_fit_then_failing_is_neither_lost_nor_reordered() -> None:
    sink = ListSink(batch_records=4, fits=2)
    sink.open(run_info())
    sink.write([step_record(s) for s in range(6)])
    sink.fail = 1
    assert not sink._deliver(force=True)
    assert sink.delivered == [] and sink._buffered() == 6
    assert sink._deliver(force=True)
    assert sink.delivered == list(range(6)) and sink.dropped_total == 0
    sink.close(RunStatus(T0, "succeeded"))


def test_the_status_is_delivered_once_after_the_buffer_and_what_is_left_is_counted_lost() -> None:
    sink = ListSink(max_buffer=5)
    sink.open(run_info())
    sink.write([step_record(s) for s in range(8)])
    assert sink.dropped_total == 3
    sink.fail = 100
    sink.close(RunStatus(T0, "crashed"))
    assert sink.statuses == [] and sink.lost == [5] and sink.dropped_total == 8
    sink.fail = 0
    assert sink._deliver(force=True) and sink._deliver(force=True)
    assert sink.statuses == ["crashed"]
