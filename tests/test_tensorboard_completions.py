"""ClipHigherGRPOTrainer.log writes sampled completions to TensorBoard as text (TRL sends its completion tables only to
wandb/trackio and parquet files). The tiny model trains one generation step with report_to tensorboard; the event file
is read back with TensorBoard's own EventAccumulator.

    python -m pytest tests/test_tensorboard_completions.py -q
"""

import glob
import json
import os
import re

import pytest

import train_grpo as tg

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_completions_reach_tensorboard_as_text_with_their_advantages(tiny_assets, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    summary = tg.main(["--config", os.path.join(ROOT, "recipes", "tiny.yaml"),
                       "--prepare_kwargs", json.dumps({"tiny_dir": os.path.dirname(tiny_assets["model"])}),
                       "--model_name_or_path", tiny_assets["model"], "--dataset_name", tiny_assets["train"],
                       "--heldout_file", "", "--output_dir", str(out),
                       "--total_generation_steps", "1", "--prompts_per_step", "4", "--per_device_train_batch_size", "16",
                       "--save_strategy", "no", "--logging_steps", "1", "--report_to", "tensorboard",
                       "--log_completions", "true", "--num_completions_to_print", "2"])
    assert summary["global_step"] == 2
    events = glob.glob(str(out / "**" / "events.out.tfevents.*"), recursive=True)
    assert events, os.listdir(out)
    texts = {}
    for path in events:
        accumulator = EventAccumulator(path, size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.startswith("completions"):
                texts.update({e.step: e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors(tag)})
    assert sorted(texts) == [1, 2]  # one text per logged optimizer update
    for text in texts.values():
        samples = text.split("\n\n---\n\n")
        assert len(samples) == 2  # num_completions_to_print
        for sample in samples:
            header, _, body = sample.partition("\n\n")
            assert re.fullmatch(r"advantage [+-]\d\.\d\d", header), header
            assert body.startswith("    ") and "\\boxed{" in body  # the completion, indented as a code block
