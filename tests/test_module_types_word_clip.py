"""WordEmbeddings (with ST's word tokenizers), WordWeights and BoW against every sentence-transformers version.

Folders saved by ST 2.2.2, 2.7.0, 3.4.1, 4.1.0, 5.7.0 and 6.2.0 (tests/compat/word_models.py) load in st with
that version's embeddings; st's portable folders load in each version with st's embeddings. The compat venvs
come from `make compat-venvs`; without them the cross-version tests skip and say why.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, EXIT_OK, ModelFolderError, RecipeError, StError
from st_cli.model import registry
from st_cli.model.word_tokenizers import ENGLISH_STOP_WORDS, PhraseTokenizer, nltk_word_tokenize
from tests.texts import COMPARE_TEXTS

VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
SCRIPT = Path(__file__).parent / "compat" / "word_models.py"
VERSIONS = ["st22", "st27", "st34", "st41", "st57", "st62"]  # st62: the main venv
STACKS = ["ws", "ws-lower", "phrase", "bow", "bow-binary"]
TEXTS = [
    *COMPARE_TEXTS,
    "I love New York and new york pizza",
    "The quick brown fox!",
    "Hello, World! hello world.",
    "(parens) \"quoted\" 'single' can't won't gonna",
    "It's the man's food...",
    "U.S.A. costs $3.88 -- really?",
]
ATOL = 1e-6
runner = CliRunner()


def _python(version: str) -> Path:
    if version == "st62":
        return Path(sys.executable)
    python = VENVS / version / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    return python


def _run(version: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [str(_python(version)), str(SCRIPT), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _has_nltk(version: str) -> bool:
    return subprocess.run([str(_python(version)), "-c", "import nltk"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(TEXTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, texts_file: Path) -> dict[str, Path]:
    """Each version's word-model folders and its own embeddings of TEXTS, made once."""
    out = {}
    for version in VERSIONS:
        folder = tmp_path_factory.mktemp(version)
        try:
            run = _run(version, "save", folder, texts_file)
        except pytest.skip.Exception:
            continue
        assert run.returncode == 0, run.stderr[-3000:]
        out[version] = folder
    return out


def _saved_stack(saved: dict[str, Path], version: str, stack: str) -> Path:
    if version not in saved:
        _python(version)  # skips, saying which venv is missing
    folder = saved[version] / stack
    if not folder.is_dir():
        pytest.skip(f"ST in {version} cannot save {stack} here (PhraseTokenizer needs nltk)")
    return folder


# ---------------------------------------------------------------- folders written by sentence-transformers


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("version", VERSIONS)
def test_folder_saved_by_each_version_matches_its_embeddings(saved: dict[str, Path], version: str, stack: str) -> None:
    folder = _saved_stack(saved, version, stack)
    if (folder.parent / f"{stack}.npy").is_file():
        theirs = np.load(folder.parent / f"{stack}.npy")
    else:  # ST 2.7 saves a BoW it cannot encode; ST 6.2 reads the folder
        from sentence_transformers import SentenceTransformer

        assert (version, stack[:3]) == ("st27", "bow")
        theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = st_cli.load_model(folder).encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("version", ["st22", "st27", "st34", "st41"])
def test_word_weights_need_no_weights_file_where_st_wrote_none(saved: dict[str, Path], version: str) -> None:
    folder = _saved_stack(saved, version, "ws")
    assert sorted(p.name for p in (folder / "1_WordWeights").iterdir()) == ["config.json"]
    summary = st_cli.summarize(folder)
    assert not summary.errors, summary.errors
    assert summary.modules[1].short_type == "WordWeights"


def test_inspect_gives_widths_and_config_without_torch(saved: dict[str, Path]) -> None:
    folder = _saved_stack(saved, "st62", "ws")  # WordEmbeddings in the root, new type strings
    s = st_cli.summarize(folder)
    assert [m.short_type for m in s.modules] == ["WordEmbeddings", "WordWeights", "Pooling"]
    assert [m.output_dim for m in s.modules] == [6, 6, 6] and s.embedding_dimension == 6
    assert s.modules[0].config["tokenizer"] == "WhitespaceTokenizer"
    assert s.modules[0].config["vocab"][:2] == ["PADDING_TOKEN", "the"]
    assert s.modules[1].config["word_weights"]["food"] == 2.5
    assert s.loaders["ST<=5.3"].status == "no" and s.loaders["ST>=6"].status == "yes"
    bow = st_cli.summarize(_saved_stack(saved, "st62", "bow"))
    assert bow.embedding_dimension == 49  # the unique words of the vocabulary
    shown = runner.invoke(app, ["inspect", str(folder)])
    assert shown.exit_code == EXIT_OK and "… (50 in all)" in shown.output  # a vocabulary is cut, not dumped
    assert "dims text → 6" in shown.output


# ---------------------------------------------------------------- folders written by st


@pytest.fixture(scope="module")
def portable(saved: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """st's portable re-save of the folders ST 2.2 wrote (the one with a PhraseTokenizer)."""
    root = tmp_path_factory.mktemp("portable")
    source = saved.get("st22") or saved.get("st62")
    if source is None:
        pytest.skip("no sentence-transformers venv saved the word models")
    out = {}
    for stack in STACKS:
        if (source / stack).is_dir():
            out[stack] = st_cli.load_model(source / stack).save(root / stack)
    return out


@pytest.fixture(scope="module")
def loaded_by(portable: dict[str, Path], texts_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each version's embeddings of st's portable folders (one process per version)."""
    out = {}
    for version in VERSIONS:
        try:
            folder = tmp_path_factory.mktemp(f"loaded-{version}")
            run = _run(version, "load", folder, texts_file, *portable.values())
        except pytest.skip.Exception:
            continue
        assert run.returncode == 0, run.stderr[-3000:]
        out[version] = folder
    return out


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("version", VERSIONS)
def test_portable_folder_loads_in_each_version(
    portable: dict[str, Path], loaded_by: dict[str, Path], version: str, stack: str
) -> None:
    if stack not in portable:
        pytest.skip(f"no {stack} folder to re-save")
    if version not in loaded_by:
        _python(version)
    folder, out = portable[stack], loaded_by[version] / stack
    error = Path(f"{out}.error.txt")
    verdict = st_cli.summarize(folder).loaders["ST<=5.3"]
    if stack == "phrase" and error.is_file():
        assert "nltk" in error.read_text(encoding="utf-8")  # ST >= 2.7 import nltk for a PhraseTokenizer
        assert any("nltk" in r for r in verdict.reasons)
        return
    if version == "st27" and stack.startswith("bow"):
        assert error.read_text(encoding="utf-8").startswith("StopIteration")  # ST 2.7 cannot encode a BoW at all
        assert verdict.status == "partial" and any("ST 2.7 cannot encode BoW" in r for r in verdict.reasons)
        return
    assert not error.is_file(), error.read_text(encoding="utf-8")
    ours, theirs = st_cli.load_model(folder).encode(TEXTS), np.load(f"{out}.npy")
    if stack.startswith("bow") and version in ("st22", "st34", "st41"):
        # ST <= 4 shuffle a BoW's vocabulary (list(set(vocab))) in every process: the same counts, other columns.
        columns = json.loads(Path(f"{out}.vocab.json").read_text(encoding="utf-8"))
        vocab = st_cli.load_model(folder).input_module.vocab  # type: ignore[attr-defined]
        ours = ours[:, [vocab.index(word) for word in columns]]
        assert any("reorder" in r for r in verdict.reasons)
    np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)


@pytest.mark.parametrize("stack", ["ws", "bow"])
def test_st6_folder_matches_sentence_transformers_6(saved: dict[str, Path], tmp_path: Path, stack: str) -> None:
    from sentence_transformers import SentenceTransformer

    model = st_cli.load_model(_saved_stack(saved, "st62", stack))
    folder = model.save(tmp_path / "m", format="st6")
    written = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    assert written[0]["type"].startswith("sentence_transformers.sentence_transformer.modules.")
    reference = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(model.encode(TEXTS), reference, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- tokenizers


def test_nltk_word_tokenize_is_reproduced(tmp_path: Path) -> None:
    if not _has_nltk("st22"):
        pytest.skip("the ST 2.2 venv has no nltk")
    texts = [*TEXTS, "«Bonjour» “quoted” ‘x’ – — a...b ;x @y #z 50% &c *star* [a] {b} <c>", "'tis 'twas 'em cannot"]
    texts += ["He said, \"Don't!\" -- and left.", "gimme lemme wanna gotta d'ye more'n whaddya whatcha", "end."]
    source, out = tmp_path / "t.json", tmp_path / "o.json"
    source.write_text(json.dumps(texts), encoding="utf-8")
    run = _run("st22", "nltk", out, source)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = json.loads(out.read_text(encoding="utf-8"))
    assert [nltk_word_tokenize(t) for t in texts] == expected


def test_phrase_tokenizer_merges_vocabulary_ngrams() -> None:
    vocab = ["PAD", "New_York", "new", "york", "quick_brown_fox", "city", "in"]
    tok = PhraseTokenizer(vocab, stop_words=["in"], ngram_separator="_", max_ngram_length=3)
    assert tok.tokenize("I live in New York city") == [1, 5]
    assert tok.tokenize("the QUICK brown fox") == [4]  # merged as the lower-cased n-gram the vocabulary has
    assert tok.tokenize("quick brown") == []  # no whole n-gram, and no single word of it is in the vocabulary
    assert len(ENGLISH_STOP_WORDS) == 386 and "the" in ENGLISH_STOP_WORDS


# ---------------------------------------------------------------- recipes, verify, bad input


def _vectors_file(folder: Path, *, gz: bool = False, bad_line: bool = False) -> Path:
    lines = ["man 0.1 0.2 0.3", "food -0.5 0.25 1.0", "eating 0.0 1.5 -2.0", "New_York 1 1 1"]
    if bad_line:
        lines.insert(2, "broken 0.1 0.2")
    text = "\n".join(lines) + "\n"
    path = folder / ("vectors.txt.gz" if gz else "vectors.txt")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_recipe_reads_a_word_vector_file_like_from_text_file(tmp_path: Path, gz: bool) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    vectors = _vectors_file(tmp_path, gz=gz)
    recipe = tmp_path / "r.yaml"
    stack = "  - type: WordWeights\n    vocab: [PADDING_TOKEN, man, food, eating, New_York]\n    word_weights: {food: 2}\n"
    recipe.write_text(
        f"modules:\n  - type: WordEmbeddings\n    embeddings_file_path: {vectors.name}\n    tokenizer: PhraseTokenizer\n"
        f"{stack}  - type: Pooling\n",
        encoding="utf-8",
    )
    model, folder = st_cli.build(recipe, tmp_path / "m")
    assert not model.input_module.untrained
    texts = ["a man eating food in New York", "food", "nothing known"]
    if _has_nltk("st62"):
        words = modules.WordEmbeddings.from_text_file(str(vectors), tokenizer=modules.tokenizer.PhraseTokenizer())
        weights = modules.WordWeights(["PADDING_TOKEN", "man", "food", "eating", "New_York"], {"food": 2})
        reference = SentenceTransformer(modules=[words, weights, modules.Pooling(3)], device="cpu").encode(texts)
        np.testing.assert_allclose(model.encode(texts), reference, atol=ATOL, rtol=0)
    summary = st_cli.summarize(folder)
    assert summary.embedding_dimension == 3 and not summary.errors
    assert any("nltk" in r for r in summary.loaders["ST>=6"].reasons)


def test_a_ragged_vector_file_is_one_line_naming_the_line(tmp_path: Path) -> None:
    vectors = _vectors_file(tmp_path, bad_line=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"modules:\n  - type: WordEmbeddings\n    embeddings_file_path: {vectors}\n  - type: Pooling\n")
    with pytest.raises(RecipeError) as caught:
        st_cli.build(recipe, tmp_path / "m")
    assert f"{vectors}:3: 2 numbers where line 1 has 3" in str(caught.value)
    assert "\n" not in str(caught.value) and not (tmp_path / "m").exists()


def test_verify_passes_on_word_models(tmp_path: Path) -> None:
    for name in ("WordWeights", "BoW"):
        spec = registry.spec(name)
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(json.dumps({"modules": list(spec.example)}), encoding="utf-8")
        _, folder = st_cli.build(recipe, tmp_path / name)
        result = runner.invoke(app, ["verify", str(folder), "--allow-untrained"])
        assert result.exit_code == EXIT_OK, result.output


def test_unknown_tokenizer_class_is_one_line_exit_2(saved: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(_saved_stack(saved, "st62", "ws"), tmp_path / "m"))
    config = folder / "wordembedding_config.json"
    raw = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps(raw | {"tokenizer_class": "mypkg.MyTokenizer"}), encoding="utf-8")
    with pytest.raises(ModelFolderError) as caught:
        st_cli.load_model(folder)
    assert "tokenizer_class 'mypkg.MyTokenizer' is not supported by st" in str(caught.value)
    result = runner.invoke(app, ["encode", "-", "-m", str(folder), "-o", str(tmp_path / "o.npy")], input="hello\n")
    assert result.exit_code == EXIT_BAD_INPUT and "mypkg.MyTokenizer" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- CLIPModel

TINY_CLIP = Path(__file__).parent / "compat" / "tiny_clip.py"
CLIP_VERSIONS = ["st22", "st27", "st34", "st41", "st57", "st62"]
# ST < 4 do not truncate CLIP texts (over 77 tokens fails there), so the cross-version texts are short ones.
SHORT_TEXTS = [t for t in COMPARE_TEXTS if len(t) < 70]


def _clip_python(version: str) -> Path:
    python = _python(version)
    if subprocess.run([str(python), "-c", "import PIL"], capture_output=True).returncode != 0:
        pytest.skip(f"{version} has no pillow, which ST's CLIPModel needs")
    return python


@pytest.fixture(scope="module")
def short_texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("short") / "texts.json"
    path.write_text(json.dumps(SHORT_TEXTS), encoding="utf-8")
    return path


@pytest.mark.parametrize("version", CLIP_VERSIONS)
def test_clip_folder_saved_by_each_version_matches(short_texts_file: Path, tmp_path: Path, version: str) -> None:
    """Each version makes its own random tiny CLIP with its transformers, saves it as ST does, and encodes."""
    python, saved = _clip_python(version), tmp_path / "saved"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [str(python), str(TINY_CLIP), str(tmp_path / "hf"), str(saved), str(short_texts_file)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    model = st_cli.load_model(saved)
    # transformers 4.30/4.40 (ST 2.2/2.7) and 5.x compute CLIP's text tower with other kernels: 1.26e-6 apart.
    atol = 2e-6 if version in ("st22", "st27") else ATOL
    np.testing.assert_allclose(model.encode(SHORT_TEXTS), np.load(f"{saved}.npy"), atol=atol, rtol=0)
    summary = st_cli.summarize(saved)
    assert summary.modules[0].short_type == "CLIPModel" and not summary.errors, summary.errors
    if (saved / "model.safetensors").is_file():  # ST 2.2's transformers writes pytorch_model.bin only
        assert summary.embedding_dimension == 16


@pytest.fixture(scope="module")
def clip_portable(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Path:
    recipe = tmp_path_factory.mktemp("clip") / "clip.yaml"
    recipe.write_text(f"modules:\n  - type: CLIPModel\n    model: {tiny_clip_dir}\n", encoding="utf-8")
    return st_cli.build(recipe, recipe.parent / "m")[1]


@pytest.mark.parametrize("version", CLIP_VERSIONS)
def test_clip_portable_folder_loads_in_each_version(
    clip_portable: Path, short_texts_file: Path, tmp_path: Path, version: str
) -> None:
    _clip_python(version)
    run = _run(version, "load", tmp_path, short_texts_file, clip_portable)
    assert run.returncode == 0, run.stderr[-3000:]
    error = tmp_path / f"{clip_portable.name}.error.txt"
    assert not error.is_file(), error.read_text(encoding="utf-8")
    ours = st_cli.load_model(clip_portable).encode(SHORT_TEXTS)
    np.testing.assert_allclose(np.load(tmp_path / f"{clip_portable.name}.npy"), ours, atol=ATOL, rtol=0)


def test_clip_inspect_and_verify(clip_portable: Path) -> None:
    s = st_cli.summarize(clip_portable)
    assert [m.short_type for m in s.modules] == ["CLIPModel"] and s.embedding_dimension == 16
    assert s.loaders["ST>=6"].status == "yes" and s.loaders["TEI"].status == "no"
    assert any("77 tokens" in r for r in s.loaders["ST<=5.3"].reasons)
    result = runner.invoke(app, ["verify", str(clip_portable), "--allow-untrained"])
    assert result.exit_code == EXIT_OK, result.output


def test_an_image_given_to_clip_is_one_line_exit_2(clip_portable: Path, tmp_path: Path) -> None:
    from PIL import Image

    model = st_cli.load_model(clip_portable)
    with pytest.raises(StError, match=r"^input 1 is a PIL\.Image\.Image object, not a string"):
        model.encode(["a photo", Image.new("RGB", (32, 32))])
    picture = tmp_path / "cat.png"
    Image.new("RGB", (32, 32)).save(picture)
    with pytest.raises(StError, match="input 0 is an image file: st's CLIPModel encodes text only"):
        model.encode([str(picture)])
    lines = tmp_path / "inputs.txt"
    lines.write_text(f"a cat\n{picture}\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", str(lines), "-m", str(clip_portable), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "image file: st's CLIPModel encodes text only" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.npy").exists()
    assert model.encode(["cat.png is just text here"]).shape == (1, 16)  # no such file: it is text


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_clip_max_seq_length_survives_a_save(tiny_clip_dir: Path, tmp_path: Path, fmt: str) -> None:
    from sentence_transformers import SentenceTransformer

    recipe = tmp_path / "clip.yaml"
    recipe.write_text(f"modules:\n  - type: CLIPModel\n    model: {tiny_clip_dir}\n    max_seq_length: 8\n")
    model, folder = st_cli.build(recipe, tmp_path / "m", format=fmt)
    texts = ["a man eating food and the cat and the dog playing with a horse", "hello world"]
    reference = SentenceTransformer(str(folder), device="cpu")
    assert reference.max_seq_length == st_cli.load_model(folder).get_max_seq_length() == 8
    np.testing.assert_allclose(model.encode(texts), reference.encode(texts), atol=ATOL, rtol=0)
    if fmt == "portable":  # (an st6 folder is a "no" for ST <= 5.3 anyway)
        assert any("ignore max_seq_length 8" in r for r in st_cli.summarize(folder).loaders["ST<=5.3"].reasons)
