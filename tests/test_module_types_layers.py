"""WeightedLayerPooling, LayerNorm, Dropout, CNN, LSTM: what the cross-version table (test_type_table.py) does not show.

Folders sentence-transformers 6.2 writes itself (trained-looking weights, its own config spellings), the
config dialects st writes, recipe errors, inspect and verify, and the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.errors import RecipeError, StError
from st_cli.model.recipe import load_recipe
from tests.texts import COMPARE_TEXTS

ATOL = 1e-6


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights no constructor gives (LayerNorm starts at 1/0, WeightedLayerPooling at 1), so loading them shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) + 0.5)


def _st_model(tiny_bert_dir: Path, *layers: torch.nn.Module, hidden_states: bool = False):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    config = {"output_hidden_states": True} if hidden_states else None
    transformer = Transformer(str(tiny_bert_dir), config_kwargs=config)
    return SentenceTransformer(modules=[transformer, *layers], device="cpu")


def _same_as_st(reference, folder: Path, **encode) -> None:
    theirs = reference.encode(COMPARE_TEXTS, convert_to_numpy=True, **encode)
    ours = st_cli.load_model(folder).encode(COMPARE_TEXTS, **encode)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- folders sentence-transformers 6.2 saves


def test_st62_layer_stack_with_trained_weights_loads(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Dropout, LayerNorm, Pooling, WeightedLayerPooling

    wlp, norm = WeightedLayerPooling(32, num_hidden_layers=2, layer_start=1), LayerNorm(64)
    _randomize(wlp, 1)
    _randomize(norm, 2)
    reference = _st_model(tiny_bert_dir, wlp, Pooling(32, ["mean", "max"]), norm, Dropout(0.4), hidden_states=True)
    reference.save(str(tmp_path / "m"))
    assert json.loads((tmp_path / "m/1_WeightedLayerPooling/config.json").read_text())["embedding_dimension"] == 32
    _same_as_st(reference, tmp_path / "m")  # ST 6.2 concatenates a list pooling_mode in its order: mean, max
    loaded = st_cli.load_model(tmp_path / "m")
    loaded.save(tmp_path / "st6", format="st6")
    _same_as_st(reference, tmp_path / "st6")
    with pytest.raises(StError, match=r"pooling modes in the order \['mean', 'max'\] need a list pooling_mode"):
        loaded.save(tmp_path / "portable")  # the legacy booleans would concatenate max before mean
    assert not (tmp_path / "portable").exists()
    summary = st_cli.summarize(tmp_path / "m")
    assert not summary.errors, summary.errors
    assert [m.short_type for m in summary.modules] == [
        "Transformer",
        "WeightedLayerPooling",
        "Pooling",
        "LayerNorm",
        "Dropout",
    ]
    assert [m.output_dim for m in summary.modules] == [32, 32, 64, 64, 64]


def test_st62_cnn_folder_loads(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import CNN, Pooling

    torch.manual_seed(5)
    reference = _st_model(tiny_bert_dir, CNN(32, out_channels=5, kernel_sizes=[3, 1]), Pooling(10, ["cls", "mean"]))
    reference.save(str(tmp_path / "m"))
    assert json.loads((tmp_path / "m/1_CNN/cnn_config.json").read_text())["stride_sizes"] == [1, 1]
    _same_as_st(reference, tmp_path / "m")
    _same_as_st(reference, tmp_path / "m", batch_size=4)  # padding reaches the convolution: batch like ST


def test_wlp_without_hidden_states_passes_tokens_through_like_st62(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """A Transformer config.json without output_hidden_states: ST >= 5.4 skip the layer pooling; so does st."""
    from sentence_transformers.sentence_transformer.modules import Pooling, WeightedLayerPooling

    wlp = WeightedLayerPooling(32, num_hidden_layers=2, layer_start=0)
    _randomize(wlp)
    reference = _st_model(tiny_bert_dir, wlp, Pooling(32, "mean"))
    reference.save(str(tmp_path / "m"))
    assert not json.loads((tmp_path / "m/config.json").read_text()).get("output_hidden_states")
    _same_as_st(reference, tmp_path / "m")


def test_lstm_matches_st62_on_packed_sequences() -> None:
    """LSTM needs WordEmbeddings' sentence_lengths to run in a stack; module to module, same weights, same output."""
    from sentence_transformers.sentence_transformer.modules import LSTM as StLSTM  # noqa: N811

    from st_cli.model.modules.lstm import LSTM

    torch.manual_seed(0)
    theirs = StLSTM(6, hidden_dim=4, num_layers=2)
    ours = LSTM(6, hidden_dim=4, num_layers=2)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval(), ours.eval()
    tokens, lengths = torch.randn(3, 7, 6), torch.tensor([7, 2, 0])
    expected = theirs({"token_embeddings": tokens, "sentence_lengths": lengths})["token_embeddings"]
    got = ours({"token_embeddings": tokens, "sentence_lengths": lengths})["token_embeddings"]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert got.shape == (3, 7, 8)


# ---------------------------------------------------------------- what st writes


def test_config_dialects(tiny_recipe, tmp_path: Path) -> None:
    stack = (
        "  - type: WeightedLayerPooling\n    num_hidden_layers: 2\n    layer_start: 1\n"
        "  - type: CNN\n    out_channels: 3\n    kernel_sizes: [1, 3]\n"
        "  - type: Pooling\n  - type: LayerNorm\n  - type: Dropout\n    dropout: 0.1\n"
    )
    recipe = tiny_recipe(stack)
    _, portable = st_cli.build(recipe, tmp_path / "p")
    _, st6 = st_cli.build(recipe, tmp_path / "s", format="st6")

    def read(root: Path, path: str) -> dict:
        return json.loads((root / path).read_text())

    assert read(portable, "config.json")["output_hidden_states"] is True  # how ST's Transformer knows to give them
    assert read(portable, "1_WeightedLayerPooling/config.json") == {
        "word_embedding_dimension": 32, "layer_start": 1, "num_hidden_layers": 2
    }  # fmt: skip
    assert read(st6, "1_WeightedLayerPooling/config.json") == {
        "embedding_dimension": 32, "layer_start": 1, "num_hidden_layers": 2
    }  # fmt: skip
    assert read(portable, "2_CNN/cnn_config.json") == {
        "in_word_embedding_dimension": 32, "out_channels": 3, "kernel_sizes": [1, 3]
    }  # fmt: skip
    assert read(st6, "2_CNN/cnn_config.json")["stride_sizes"] == [1, 1]
    assert read(portable, "4_LayerNorm/config.json") == {"dimension": 6}
    assert read(portable, "5_Dropout/config.json") == {"dropout": 0.1}
    # ST <= 3.0 read only pickles; ST 6.2 writes safetensors only.
    assert (portable / "4_LayerNorm/pytorch_model.bin").is_file() and not (
        st6 / "4_LayerNorm/pytorch_model.bin"
    ).exists()
    assert not list((portable / "5_Dropout").glob("*.safetensors"))
    types_written = [e["type"] for e in json.loads((st6 / "modules.json").read_text())]
    assert (
        types_written[1]
        == "sentence_transformers.sentence_transformer.modules.weighted_layer_pooling.WeightedLayerPooling"
    )


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        ("  - type: CNN\n    kernel_sizes: [2, 3]\n", "modules[1].kernel_sizes: must be odd positive sizes"),
        ("  - type: CNN\n    stride_sizes: [2, 1, 1]\n", "modules[1].stride_sizes: only strides of 1"),
        (
            "  - type: WeightedLayerPooling\n    num_hidden_layers: 2\n",
            "modules[1].layer_start: must lie in 0..num_hidden_layers (2)",
        ),
        (
            "  - type: WeightedLayerPooling\n    num_hidden_layers: 2\n    layer_start: 1\n    layer_weights: [1]\n",
            "modules[1].layer_weights: needs 2 values",
        ),
        ("  - type: LSTM\n    word_embedding_dimension: 32\n    hidden_dim: 4\n", "did you mean 'embedding_dimension'"),
        (
            "  - type: Pooling\n  - type: LayerNorm\n    dimension: 8\n",
            "modules[2].dimension: is 8 but the module before gives 32",
        ),
        ("  - type: LayerNorm\n", "LayerNorm works on the sentence embedding: put a Pooling before it"),
        ("  - type: Pooling\n  - type: Dropout\n    dropout: 1.5\n", "modules[2].dropout: must be a probability"),
    ],
)
def test_recipe_errors_name_the_key(tiny_recipe, stack: str, message: str) -> None:
    with pytest.raises(RecipeError) as e:
        load_recipe(tiny_recipe(stack))
    assert message in str(e.value) and "recipe.yaml:" in str(e.value)


def test_lstm_after_a_transformer_is_one_clear_error(tiny_recipe, tmp_path: Path) -> None:
    """sentence-transformers fails on it too (KeyError 'sentence_lengths'); st says why, exit 2, no folder left."""
    recipe = tiny_recipe("  - type: LSTM\n    hidden_dim: 4\n  - type: Pooling\n")
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: LSTM needs sentence_lengths, which only a WordEmbeddings input module gives"
    )
    assert not (tmp_path / "m").exists()
    with pytest.raises(StError, match="sentence_lengths"):
        st_cli.build(recipe, tmp_path / "m2")


# ---------------------------------------------------------------- inspect, verify, damaged folders


def test_inspect_and_verify(tiny_recipe, tmp_path: Path) -> None:
    stack = "  - type: CNN\n    out_channels: 3\n    kernel_sizes: [1, 3]\n  - type: Pooling\n  - type: LayerNorm\n"
    _, folder = st_cli.build(tiny_recipe(stack + "  - type: Dropout\n"), tmp_path / "m")
    summary = st_cli.summarize(folder)
    cnn = summary.modules[1]
    assert cnn.config_file == "1_CNN/cnn_config.json" and cnn.config == {
        "in_embedding_dimension": 32, "out_channels": 3, "kernel_sizes": [1, 3]
    }  # fmt: skip
    assert (cnn.input_dim, cnn.output_dim, summary.embedding_dimension) == (32, 6, 6)
    assert summary.loaders["TEI"].status == "no" and summary.loaders["ST<=5.3"].status == "yes"
    result = CliRunner().invoke(app, ["verify", str(folder), "--json", "--allow-untrained"])
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert result.exit_code == 0, result.output
    assert checks["reload"]["status"] == checks["reference"]["status"] == "pass"
    # ST's CNN reads the padding: a text's vector depends on its batch there too, so the check says why it is skipped.
    assert checks["batch_invariance"]["status"] == "skipped"
    assert "CNN: its convolutions read the padding tokens" in checks["batch_invariance"]["detail"]


def test_st_encode_batches_a_cnn_stack_as_st_does(tiny_recipe, tmp_path: Path) -> None:
    """The CLI normally cuts batches by a token budget; for a stack whose vectors depend on padding it cuts ST's."""
    from sentence_transformers import SentenceTransformer

    _, folder = st_cli.build(tiny_recipe("  - type: CNN\n    out_channels: 4\n  - type: Pooling\n"), tmp_path / "m")
    texts = tmp_path / "texts.txt"
    lines = [t for t in COMPARE_TEXTS if "\n" not in t and "\r" not in t] * 3  # > 32 rows: several ST batches
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    result = CliRunner().invoke(app, ["encode", str(texts), "-m", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    theirs = SentenceTransformer(str(folder), device="cpu").encode(lines, convert_to_numpy=True)
    np.testing.assert_allclose(np.load(out), theirs, atol=ATOL, rtol=0)


def test_weights_that_do_not_fit_the_config_are_one_line(tiny_recipe, tmp_path: Path) -> None:
    _, folder = st_cli.build(tiny_recipe("  - type: Pooling\n  - type: LayerNorm\n"), tmp_path / "m")
    (folder / "2_LayerNorm/config.json").write_text('{"dimension": 16}')
    summary = st_cli.summarize(folder)
    assert any("norm.weight has shape [32], the config says [16]" in f.message for f in summary.errors)
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(app, ["encode", "-", "-m", str(folder), "-o", str(out)], input="hello\n")
    assert result.exit_code == 2 and "2_LayerNorm" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_missing_config_key_is_one_line(tiny_recipe, tmp_path: Path) -> None:
    _, folder = st_cli.build(tiny_recipe("  - type: CNN\n  - type: Pooling\n"), tmp_path / "m")
    (folder / "1_CNN/cnn_config.json").write_text('{"out_channels": 256}')
    with pytest.raises(StError, match=r"1_CNN/cnn_config.json: missing key 'in_word_embedding_dimension'"):
        st_cli.load_model(folder)


# ---------------------------------------------------------------- the real model


def test_minilm_with_layer_pooling_matches_st62(minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"seed: 1\nmodules:\n  - type: Transformer\n    model: {minilm_dir}\n"
        "  - type: WeightedLayerPooling\n    num_hidden_layers: 6\n    layer_start: 3\n    layer_weights: [1, 2, 3, 4]\n"
        "  - type: Pooling\n  - type: LayerNorm\n  - type: Dropout\n  - type: Normalize\n"
    )
    model, folder = st_cli.build(recipe, tmp_path / "m")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS), theirs, atol=ATOL, rtol=0)
    plain = st_cli.load_model(minilm_dir).encode(COMPARE_TEXTS)
    assert np.abs(model.encode(COMPARE_TEXTS) - plain).max() > 1e-2  # the layer weights are really used


# ---------------------------------------------------------------- sizes from configs, against the weight headers

LSTM_STACK = (
    "modules:\n  - type: WordEmbeddings\n    vocab: [PADDING, man, food, eating]\n    dimension: 8\n"
    "  - type: LSTM\n    hidden_dim: 4\n  - type: Pooling\n    mode: mean\n"
)
CNN_STACK = "  - type: CNN\n    out_channels: 3\n    kernel_sizes: [1, 3]\n  - type: Pooling\n"


@pytest.mark.parametrize(
    ("stack", "file", "edit", "message"),
    [
        ("lstm", "1_LSTM/lstm_config.json", {"num_layers": 1000000}, "num_layers is 1000000, the weights hold 1"),
        ("lstm", "1_LSTM/lstm_config.json", {"num_layers": 2}, "num_layers is 2, the weights hold 1"),
        ("lstm", "1_LSTM/lstm_config.json", {"hidden_dim": 10**7}, "encoder.weight_ih_l0 has shape [16, 8]"),
        ("lstm", "1_LSTM/lstm_config.json", {"bidirectional": False}, "_reverse is in the weights but not in the config's LSTM"),
        ("lstm", "1_LSTM/lstm_config.json", {"num_layers": "many"}, "key 'num_layers' must be a positive integer"),
        ("cnn", "1_CNN/cnn_config.json", {"kernel_sizes": [1] * 100000}, "kernel_sizes lists 100000 convolutions"),
        ("cnn", "1_CNN/cnn_config.json", {"out_channels": 10**9}, "convs.0.weight has shape [3, 32, 1]"),
        ("cnn", "1_CNN/cnn_config.json", {"kernel_sizes": [1, 3000001]}, "convs.1.weight has shape [3, 32, 3]"),
        ("cnn", "1_CNN/cnn_config.json", {"out_channels": "six"}, "key 'out_channels' must be a positive integer"),
    ],
    ids=["lstm-layers-10^6", "lstm-layers-2", "lstm-hidden-10^7", "lstm-one-way", "lstm-layers-string",
         "cnn-kernels-10^5", "cnn-channels-10^9", "cnn-kernel-3e6", "cnn-channels-string"],
)  # fmt: skip
def test_config_sizes_are_checked_against_the_weight_headers(
    tiny_recipe, tmp_path: Path, stack: str, file: str, edit: dict, message: str
) -> None:
    """A size no weights back is an inspect error, and encode refuses it in one line before any weights load."""
    recipe = tmp_path / "r.yaml"
    if stack == "lstm":
        recipe.write_text(LSTM_STACK)
    else:
        recipe = tiny_recipe(CNN_STACK)
    _, folder = st_cli.build(recipe, tmp_path / "m")
    path = folder / file
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    errors = [f for f in st_cli.summarize(folder).errors if message in f.message]
    assert errors and errors[0].check in ("dimensions", "layout"), st_cli.summarize(folder).findings
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(app, ["encode", "-", "-m", str(folder), "-o", str(out)], input="man food\n")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and file.split("/")[0] in lines[0] and message in lines[0], result.stderr
    assert not out.exists()
