"""reasonrl/demo/tiny.py's cache: reused when it holds the current model shape, rebuilt otherwise."""

import json

from reasonrl.demo import tiny


def test_cache_of_another_model_shape_is_rebuilt_and_the_current_one_reused(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(tiny, "_build", lambda tiny_dir, paths, marker, seed: built.append(tiny_dir) or {"built": True})
    # a cache from before the shape was recorded, then one with 16-dimensional heads (vLLM's CPU backend refuses them)
    for stale in ({"sft_steps": 600}, {"model_shape": {**tiny.MODEL_SHAPE, "num_attention_heads": 4}}):
        (tmp_path / "done.json").write_text(json.dumps(stale))
        assert tiny.ensure_tiny_assets(str(tmp_path))["built"] is True
    assert built == [str(tmp_path)] * 2
    (tmp_path / "done.json").write_text(json.dumps({"model_shape": tiny.MODEL_SHAPE, "sft_steps": 600}))
    assert tiny.ensure_tiny_assets(str(tmp_path))["sft_steps"] == 600 and len(built) == 2
