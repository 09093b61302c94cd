"""The Hugging Face callback on a real `Trainer.train()` (tiny BERT from a config, offline)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded: the model is built from a config
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# installed by `make test` (extra "transformers"); imported plainly so a missing install fails
import transformers  # noqa: E402

from rmswatch.integrations.transformers import RmswatchCallback  # noqa: E402
from rmswatch.trainer_hooks.records import StepRecord, ValidationRecord  # noqa: E402
from tests.trainer_hooks.support import RecordingSink  # noqa: E402


class _Rows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 60, (n, 12), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def _model() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def _train(tmp_path: Path, callback: RmswatchCallback, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "optim": "rmsprop",
        "learning_rate": 1e-3,
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_grad_norm": 0.5,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 3,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    resume = overrides.pop("resume_from_checkpoint", None)
    options.update(overrides)
    trainer = transformers.Trainer(
        model=_model(),
        args=transformers.TrainingArguments(**options),
        train_dataset=_Rows(64, seed=0),
        eval_dataset=_Rows(8, seed=1),
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.slow
def test_train_records_loss_pre_clip_norm_and_eval_loss_at_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # accelerate clips with torch's two halves of clip_grad_norm_: get_total_norm, then
    # clip_grads_with_norm_(params, max_norm, total_norm); the spy sees the norm it clipped with
    returned: list[float] = []
    real_clip = torch.nn.utils.clip_grads_with_norm_

    def spy(parameters: Any, max_norm: float, total_norm: torch.Tensor, *rest: Any) -> None:
        returned.append(float(total_norm))
        real_clip(parameters, max_norm, total_norm, *rest)

    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", spy)
    sink = RecordingSink()
    callback = RmswatchCallback(job="hf-test", sinks=[sink], system_metrics=False)
    trainer = _train(tmp_path, callback)

    steps = sink.of(StepRecord)
    assert [r.step for r in steps] == list(range(1, 7))
    assert sink.run is not None
    names = [li.name for li in sink.run.layers]
    assert "bert.embeddings.word_embeddings.weight" in names and "classifier.weight" in names
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, 7))
    assert [r.loss for r in steps] == [h["loss"] for h in logged]
    assert len(returned) == 6
    for rec, total in zip(steps, returned, strict=True):
        assert rec.grad_norm_before_clip == pytest.approx(total, rel=1e-6)
        assert rec.clipped == (total > 0.5)
        assert rec.grad_norm <= 0.5 * (1 + 1e-5)  # what the optimizer used: clipped
    evals = sink.of(ValidationRecord)
    assert [(v.step, v.name) for v in evals] == [(3, "eval_loss"), (6, "eval_loss")]
    assert evals[-1].value == pytest.approx(
        [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h][-1]
    )
    assert sink.status is not None and sink.status.status == "succeeded"


@pytest.mark.slow
def test_bf16_training_is_recorded(tmp_path: Path) -> None:
    sink = RecordingSink()
    callback = RmswatchCallback(job="hf-bf16", sinks=[sink], system_metrics=False)
    _train(tmp_path, callback, bf16=True, eval_strategy="no")
    steps = sink.of(StepRecord)
    assert [r.step for r in steps] == list(range(1, 7))
    assert all(r.loss is not None and math.isfinite(r.loss) for r in steps)
    assert sink.status is not None and sink.status.status == "succeeded"


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_step_axis(tmp_path: Path) -> None:
    first = RmswatchCallback(job="hf-resume", sinks=[RecordingSink()], system_metrics=False)
    _train(tmp_path, first, max_steps=3, save_strategy="steps", save_steps=3, eval_strategy="no")
    checkpoint = tmp_path / "out" / "checkpoint-3"
    assert checkpoint.is_dir()
    sink = RecordingSink()
    callback = RmswatchCallback(job="hf-resume", sinks=[sink], system_metrics=False)
    _train(tmp_path, callback, eval_strategy="no", resume_from_checkpoint=str(checkpoint))
    assert sink.run is not None and sink.run.resumed_from_step == 3
    assert [r.step for r in sink.of(StepRecord)] == [4, 5, 6]
