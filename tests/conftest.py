import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """tiny.py's warm-started model, tokenizer and data, built once per test session (~30 s on 2 cores)."""
    import tiny

    return tiny.ensure_tiny_assets(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tokenizer():
    """A small tokenizer trained on one JustRL prompt, with tiny.py's chat template (builds in a second)."""
    import data
    import tiny

    return tiny.build_tokenizer(["What is 1 + 1?" + data.JUSTRL_SUFFIX] * 4)
