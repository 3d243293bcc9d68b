"""st_cli.bert: `st encode`'s BERT without transformers' modeling code, equal to BertModel or not used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from st_cli import bert
from st_cli.modules.transformer import Transformer, inference_only


def _features(folder: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("texts", [["the quick brown fox", "a dog"], ["one text only"]])  # padded, not padded
def test_same_hidden_states_as_transformers_bert(tiny_bert_dir: Path, texts: list[str]) -> None:
    from transformers import AutoModel

    ours, theirs = bert.load(tiny_bert_dir), AutoModel.from_pretrained(str(tiny_bert_dir)).eval()
    assert ours is not None
    features = _features(tiny_bert_dir, texts)
    with torch.inference_mode():
        got = ours(**features).last_hidden_state
        want = theirs(**features).last_hidden_state
    assert torch.equal(got, want)
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == bert.expected_shapes(ours.config)


@pytest.mark.parametrize(
    "change",
    [
        {"hidden_act": "relu"},
        {"position_embedding_type": "relative_key"},
        {"output_hidden_states": True},
        {"model_type": "roberta"},
        {"is_decoder": True},
    ],
)
def test_configs_it_does_not_cover_go_to_transformers(tiny_bert_dir: Path, tmp_path: Path, change: dict) -> None:
    folder = shutil.copytree(tiny_bert_dir, tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert bert.load(folder) is None


def test_weights_it_cannot_map_go_to_transformers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_bert_dir, tmp_path / "bert")
    weights = load_file(str(folder / bert.WEIGHTS))
    save_file({f"bert.{k}": v for k, v in weights.items()}, str(folder / bert.WEIGHTS))
    assert bert.load(folder) is None
    (folder / bert.WEIGHTS).unlink()
    assert bert.load(folder) is None


def test_encode_loads_it_and_saving_switches_to_transformers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with inference_only():
        light = Transformer(str(tiny_bert_dir))
    plain = Transformer(str(tiny_bert_dir))
    assert isinstance(light.auto_model, bert.BertEncoder)
    assert not isinstance(plain.auto_model, bert.BertEncoder)
    features = light.tokenize(["a lazy dog", "the fox"])
    with torch.inference_mode():
        want = plain.forward(dict(features))["token_embeddings"]
        assert torch.equal(light.forward(dict(features))["token_embeddings"], want)
        light.save(str(tmp_path / "saved"))  # transformers' save_pretrained, same weights
        assert not isinstance(light.auto_model, bert.BertEncoder)
        assert torch.equal(light.forward(dict(features))["token_embeddings"], want)
    again = Transformer(str(tmp_path / "saved"))
    with torch.inference_mode():
        np.testing.assert_array_equal(again.forward(dict(features))["token_embeddings"].numpy(), want.numpy())
