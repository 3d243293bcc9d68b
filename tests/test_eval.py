"""st eval: metrics equal sentence-transformers 6.2's evaluators on the same folder (pairs, a BEIR
folder, triplets), hand-computed metrics on a tiny case, --json, --min, --record, and bad input."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode.options import EncodeOptions
from st_cli.errors import EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_OK
from st_cli.eval import data as evaldata
from st_cli.eval.metrics import average_ranks, pearson, retrieval_metrics, spearman
from st_cli.eval.tasks import Context, run_retrieval
from st_cli.model.model import build as build_folder
from st_cli.model.model import load_model

runner = CliRunner()

WORDS = (
    "the a man woman dog cat food eating playing horse movie new great text vector model sentence search data test"
).split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))


@pytest.fixture(scope="session")
def tiny_model(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BERT → mean Pooling → Normalize (nothing untrained: --record then verify passes)."""
    root = tmp_path_factory.mktemp("eval")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"seed: 7\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n"
        "  - type: Pooling\n    mode: mean\n  - type: Normalize\n",
        encoding="utf-8",
    )
    _, folder = build_folder(recipe, root / "model")
    return folder


@pytest.fixture(scope="session")
def st_model(tiny_model: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model), device="cpu")


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pairs (.csv), triplets (.jsonl) and a BEIR folder whose corpus has duplicate texts (score ties)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("evaldata")
    pairs = root / "pairs.csv"
    with pairs.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows([sentence(rng), sentence(rng), round(rng.uniform(0, 5), 1)] for _ in range(80))
    triplets = root / "triplets.jsonl"
    with triplets.open("w", encoding="utf-8") as f:
        for _ in range(60):
            row = {"anchor": sentence(rng), "positive": sentence(rng), "negative": sentence(rng)}
            f.write(json.dumps(row) + "\n")
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    texts = [sentence(rng) for _ in range(150)]
    texts += [texts[i % 10] for i in range(40)]  # identical documents: ties the evaluator breaks by id
    ids = [f"d{i:03d}" for i in range(len(texts))]
    rng.shuffle(ids)  # corpus order is not id order
    with (beir / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, text in zip(ids, texts, strict=True):
            title = rng.choice(["", "Title"])
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (beir / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"_id": f"q{i}", "text": sentence(rng)}) + "\n")
    with (beir / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i in range(25):  # q25..q29 have no judgement: not evaluated
            for doc in rng.sample(ids, rng.randint(1, 4)):
                f.write(f"q{i}\t{doc}\t1\n")
            f.write(f"q{i}\t{rng.choice(ids)}\t0\n")  # judged irrelevant
    return {"pairs": pairs, "triplets": triplets, "beir": beir}


def st_eval(*args: str) -> tuple[int, object, str]:
    result = runner.invoke(app, ["eval", *args])
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:
        doc = None
    return result.exit_code, doc, result.stderr


def reference_beir(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        corpus[row["_id"]] = (row["title"] + " " + row["text"]).strip()
    queries = {}
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        queries[row["_id"]] = row["text"]
    relevant: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, cid, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(qid, set()).add(cid)
    return queries, corpus, relevant


# ---------------------------------------------------------------- against sentence-transformers


def test_pairs_equal_embedding_similarity_evaluator(tiny_model, st_model, eval_data) -> None:
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    rows = list(csv.DictReader(eval_data["pairs"].open(encoding="utf-8")))
    sims = ["cosine", "dot", "euclidean", "manhattan"]
    expected = EmbeddingSimilarityEvaluator(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        [float(r["score"]) for r in rows],
        similarity_fn_names=sims,
    )(st_model)
    args = ["--similarity", "dot", "--similarity", "euclidean", "--similarity", "manhattan"]
    code, doc, _ = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), *args, "--json")
    assert code == EXIT_OK
    assert doc["task"] == "pairs" and doc["n"] == 80
    assert list(doc["metrics"]) == list(expected)  # same names, same order
    for name, value in expected.items():
        assert doc["metrics"][name] == pytest.approx(value, abs=1e-6), name


def test_triplets_equal_triplet_evaluator(tiny_model, st_model, eval_data) -> None:
    from sentence_transformers.sentence_transformer.evaluation import TripletEvaluator

    rows = [json.loads(line) for line in eval_data["triplets"].read_text(encoding="utf-8").splitlines()]
    expected = TripletEvaluator(
        [r["anchor"] for r in rows], [r["positive"] for r in rows], [r["negative"] for r in rows]
    )(st_model)
    code, doc, _ = st_eval(str(tiny_model), "--data", str(eval_data["triplets"]), "--json")
    assert code == EXIT_OK and doc["task"] == "triplets"
    assert doc["metrics"] == pytest.approx(expected, abs=1e-9)
    assert list(doc["metrics"]) == ["cosine_accuracy"]


def test_retrieval_equals_information_retrieval_evaluator(tiny_model, st_model, eval_data) -> None:
    from sentence_transformers import util
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries, corpus, relevant = reference_beir(eval_data["beir"])
    expected = InformationRetrievalEvaluator(
        queries, corpus, relevant, score_functions={"cosine": util.cos_sim, "dot": util.dot_score}
    )(st_model)
    code, doc, _ = st_eval(str(tiny_model), "--data", str(eval_data["beir"]), "--similarity", "dot", "--json")
    assert code == EXIT_OK
    assert doc["task"] == "retrieval" and doc["n"] == 25 and doc["split"] == "test"
    assert list(doc["metrics"]) == list(expected)
    assert doc["metrics"] == pytest.approx(expected, abs=1e-6)
    assert "cosine_ndcg@10" in doc["metrics"] and "cosine_map@100" in doc["metrics"]


def test_running_top_k_over_small_windows_equals_a_full_sort(tiny_model, eval_data, monkeypatch) -> None:
    """The same corpus vectors in windows of 7 (27 of them, duplicates across windows): the kept top-k
    is exactly a full sort by (score descending, corpus id ascending), the evaluator's order."""
    import torch

    from st_cli.eval import tasks
    from st_cli.eval.embed import embed_all
    from st_cli.eval.metrics import MAX_K

    model = load_model(tiny_model)
    data = evaldata.read_retrieval(eval_data["beir"], "test")
    options = EncodeOptions().for_device("cpu")
    corpus = embed_all(model, data.corpus, task="document", options=options)
    queries = embed_all(model, data.queries, task="query", options=options)
    monkeypatch.setattr(
        tasks, "embed_windows", lambda *a, **k: ((s, corpus[s : s + 7]) for s in range(0, len(corpus), 7))
    )
    monkeypatch.setattr(tasks, "SCORE_BLOCK", 7 * 4)  # 4 queries per block: rows slices too
    got = run_retrieval(data, Context(model, ("cosine",), options))
    q, c = torch.from_numpy(queries), torch.from_numpy(corpus)
    # Scored in the same blocks (a matmul's last bit depends on its shape), then fully sorted.
    blocks = [
        torch.cat([tasks.MATRIX["cosine"](q[f : f + 4], c[s : s + 7]) for s in range(0, len(c), 7)], dim=1)
        for f in range(0, len(q), 4)
    ]
    scores = torch.cat(blocks).tolist()
    ranked = [
        [data.corpus_ids[i] for i in sorted(range(len(row)), key=lambda i: (-row[i], data.corpus_ids[i]))[:MAX_K]]
        for row in scores
    ]
    assert got == retrieval_metrics(ranked, data.relevant, "cosine")


# ---------------------------------------------------------------- by hand


def test_retrieval_metrics_by_hand() -> None:
    # Query 1: relevant {a, c}; ranked a x c → hits at ranks 1 and 3. Query 2: relevant {z}; never found.
    ranked = [["a", "x", "c", "y"], ["b", "d"]]
    got = retrieval_metrics(ranked, [{"a", "c"}, {"z"}], "cosine")
    assert got["cosine_accuracy@1"] == 0.5
    assert got["cosine_precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["cosine_recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["cosine_mrr@10"] == pytest.approx((1 + 0) / 2)
    dcg = 1 / np.log2(2) + 1 / np.log2(4)
    ideal = 1 / np.log2(2) + 1 / np.log2(3)
    assert got["cosine_ndcg@10"] == pytest.approx((dcg / ideal + 0) / 2)
    assert got["cosine_map@100"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)


def test_correlations_by_hand() -> None:
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3, 4], [1, 8, 27, 64]) < 0.99
    # d² = (1-2)² + (2-1)² + 0 + 0 = 2 → 1 - 6·2 / (4·15) = 0.8
    assert spearman([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(0.8)


def test_pairs_on_a_hand_made_case(tiny_model, tmp_path: Path) -> None:
    """Gold scores that are the model's own cosines: Spearman and Pearson are 1."""
    model = load_model(tiny_model)
    texts = ["the cat", "a dog is playing", "movie search data", "new great text"]
    e = model.encode(texts)
    path = tmp_path / "hand.tsv"
    lines = ["sentence1\tsentence2\tscore"]
    lines += [f"{texts[i]}\t{texts[j]}\t{float(e[i] @ e[j]):.8f}" for i in range(4) for j in range(i + 1, 4)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, doc, _ = st_eval(str(tiny_model), "--data", str(path), "--json")
    assert code == EXIT_OK
    assert doc["metrics"]["spearman_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert doc["metrics"]["pearson_cosine"] == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- CLI: gate, output, record


def test_min_exits_1_below_and_0_above(tiny_model, eval_data) -> None:
    code, doc, _ = st_eval(str(tiny_model), "--data", str(eval_data["triplets"]), "--json")
    value = doc["metrics"]["cosine_accuracy"]
    above = st_eval(str(tiny_model), "--data", str(eval_data["triplets"]), "--min", f"cosine_accuracy={value - 0.01}")
    below = st_eval(str(tiny_model), "--data", str(eval_data["triplets"]), "--min", f"cosine_accuracy={value + 0.01}")
    assert above[0] == EXIT_OK
    assert below[0] == EXIT_MISMATCH and "cosine_accuracy" in below[2] and "below --min" in below[2]


def test_min_with_an_unknown_metric_is_exit_2_with_did_you_mean(tiny_model, eval_data) -> None:
    code, _, err = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--min", "spearman_cosin=0.5")
    assert code == EXIT_BAD_INPUT
    assert "did you mean 'spearman_cosine'" in err and "Traceback" not in err
    code, _, err = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--min", "spearman_cosine")
    assert code == EXIT_BAD_INPUT and "NAME=VALUE" in err


def test_json_schema(tiny_model, eval_data) -> None:
    code, doc, _ = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--json")
    assert code == EXIT_OK
    assert {"schema", "model", "data", "task", "n", "seconds", "metrics"} <= set(doc)
    assert doc["schema"] == 1 and doc["model"] == str(tiny_model) and doc["data"] == str(eval_data["pairs"])
    two = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--data", str(eval_data["triplets"]), "--json")
    assert [d["task"] for d in two[1]] == ["pairs", "triplets"]


def test_dtype_bfloat16_runs_reduced_and_says_so_and_bad_dtypes_are_refused(tiny_model, eval_data) -> None:
    _, exact, _ = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--json")
    code, reduced, _ = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--dtype", "bfloat16", "--json")
    assert code == EXIT_OK and exact["dtype"] == "float32" and reduced["dtype"] == "bfloat16"
    assert reduced["metrics"] != exact["metrics"]  # it did run in bfloat16...
    assert reduced["metrics"] == pytest.approx(exact["metrics"], abs=0.05)  # ...close to float32's metrics
    table = runner.invoke(app, ["eval", str(tiny_model), "--data", str(eval_data["pairs"]), "--dtype", "bfloat16"])
    assert table.exit_code == EXIT_OK and ", bfloat16 (" in table.stdout
    code, _, err = st_eval(str(tiny_model), "--data", str(eval_data["pairs"]), "--dtype", "int8")
    assert code == EXIT_BAD_INPUT and "--dtype: expected one of float32, bfloat16, float16, got 'int8'" in err
    args = ("--data", str(eval_data["pairs"]), "--dtype", "bfloat16", "--backend", "onnx")
    code, _, err = st_eval(str(tiny_model), *args)
    assert code == EXIT_BAD_INPUT and "applies to --backend torch" in err and "Traceback" not in err


def test_table_output(tiny_model, eval_data) -> None:
    result = runner.invoke(app, ["eval", str(tiny_model), "--data", str(eval_data["pairs"])])
    assert result.exit_code == EXIT_OK
    assert "spearman_cosine" in result.stdout and "pearson_cosine" in result.stdout


def test_columns_by_option_and_bad_data(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "sts.jsonl"
    rows = [{"a": "the cat", "b": "a dog", "label": 1.0}, {"a": "movie", "b": "search data", "label": 3.0}]
    rows.append({"a": "text", "b": "new text", "label": 4.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = st_eval(str(tiny_model), "--data", str(path))
    assert code == EXIT_BAD_INPUT and "its columns: a, b, label" in err
    cols = ["--column", "sentence1=a", "--column", "sentence2=b", "--column", "score=label"]
    code, doc, _ = st_eval(str(tiny_model), "--data", str(path), *cols, "--json")
    assert code == EXIT_OK and doc["n"] == 3
    code, _, err = st_eval(str(tiny_model), "--data", str(path), "--column", "scor=label")
    assert code == EXIT_BAD_INPUT and "did you mean 'score'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence1,sentence2,score\nx,y,high\n", encoding="utf-8")
    code, _, err = st_eval(str(tiny_model), "--data", str(bad))
    assert code == EXIT_BAD_INPUT and "bad.csv:2" in err and "not a number" in err


def test_unknown_split_names_the_ones_there(tiny_model, eval_data) -> None:
    code, _, err = st_eval(str(tiny_model), "--data", str(eval_data["beir"]), "--split", "tset")
    assert code == EXIT_BAD_INPUT and "did you mean --split test" in err


def test_record_writes_manifest_and_card_and_verify_still_passes(tiny_model, eval_data, tmp_path: Path) -> None:
    import shutil

    from st_cli.verify.verify import verify_model

    folder = Path(shutil.copytree(tiny_model, tmp_path / "m"))
    code, doc, _ = st_eval(str(folder), "--data", str(eval_data["pairs"]), "--record", "--json")
    assert code == EXIT_OK
    manifest = json.loads((folder / "st_manifest.json").read_text(encoding="utf-8"))
    (entry,) = manifest["evaluations"]
    assert entry["data"] == "pairs.csv" and entry["sha256"] == doc["sha256"]
    assert entry["metrics"]["spearman_cosine"] == pytest.approx(doc["metrics"]["spearman_cosine"])
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation" in card and "spearman_cosine" in card
    # Recording again replaces the entry (same file, same digest) and keeps one section in the card.
    assert st_eval(str(folder), "--data", str(eval_data["pairs"]), "--record")[0] == EXIT_OK
    manifest = json.loads((folder / "st_manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["evaluations"]) == 1
    assert (folder / "README.md").read_text(encoding="utf-8").count("## Evaluation") == 1
    assert verify_model(folder).check("integrity").status == "pass"


# ---------------------------------------------------------------- the seed workflow


def test_seed_workflow_custom_layer_eval_train_eval_verify(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """A base model + a fresh layer → st eval (low) → st train --eval-data → st eval (recovered) → st verify.

    The data: pairs of texts scored by the base stack's own cosine (what the added layer must keep).
    """
    base_recipe = tmp_path / "base.yaml"
    base_recipe.write_text(
        f"seed: 7\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n",
        encoding="utf-8",
    )
    _, base = build_folder(base_recipe, tmp_path / "base")
    recipe = tmp_path / "narrow.yaml"
    recipe.write_text(
        f"seed: 3\nbase: {base}\nmodules:\n  - type: Dense\n    out_features: 12\n    activation: identity\n"
        "  - type: Normalize\n",
        encoding="utf-8",
    )
    _, narrow = build_folder(recipe, tmp_path / "narrow")

    rng = random.Random(5)
    texts = list(dict.fromkeys(sentence(rng) for _ in range(700)))
    corpus, held = texts[:500], texts[500:]
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    teacher = load_model(base)
    vectors = teacher.encode(held, normalize=True)
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        for _ in range(300):
            i, j = rng.sample(range(len(held)), 2)
            writer.writerow([held[i], held[j], float(vectors[i] @ vectors[j])])

    code, before, _ = st_eval(str(narrow), "--data", str(pairs), "--json")
    assert code == EXIT_OK
    low = before["metrics"]["spearman_cosine"]
    assert runner.invoke(app, ["verify", str(narrow)]).exit_code == EXIT_MISMATCH  # the Dense is untrained

    out = tmp_path / "trained"
    args = ["train", str(narrow), "--data", str(tmp_path / "corpus.txt"), "--eval-data", str(pairs), "-o", str(out)]
    result = runner.invoke(app, [*args, "--epochs", "2", "--keep", "best", "--batch-size", "32"])
    assert result.exit_code == EXIT_OK, result.output
    assert "init: auto: module 2 (Dense 32→12) is a fresh linear layer narrower than its input" in result.stderr
    assert f"eval {pairs} (pairs) spearman_cosine: untrained {low:.4f} → pca init" in result.stderr
    assert "kept epoch" in result.stderr

    code, after, _ = st_eval(str(out), "--data", str(pairs), "--json")
    assert code == EXIT_OK
    high = after["metrics"]["spearman_cosine"]
    assert high > low + 0.1 and high > 0.9, (low, high)
    manifest = json.loads((out / "st_manifest.json").read_text(encoding="utf-8"))
    (recorded,) = manifest["evaluations"]  # the kept epoch's evaluation, also in the card
    assert recorded["metrics"]["spearman_cosine"] == pytest.approx(high, abs=1e-6)
    assert manifest["training"]["init_method"] == "pca" and manifest["training"]["keep"] == "best"
    assert "spearman_cosine" in (out / "README.md").read_text(encoding="utf-8")
    verified = runner.invoke(app, ["verify", str(out)])
    assert verified.exit_code == EXIT_OK, verified.output


def test_record_needs_a_local_folder_with_a_manifest(tiny_model, eval_data, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_model, tmp_path / "m"))
    (folder / "st_manifest.json").unlink()
    code, _, err = st_eval(str(folder), "--data", str(eval_data["pairs"]), "--record")
    assert code == EXIT_BAD_INPUT and "--record needs a local folder with st_manifest.json" in err
    assert not (folder / "st_manifest.json").exists() and "Evaluation" not in (folder / "README.md").read_text()
