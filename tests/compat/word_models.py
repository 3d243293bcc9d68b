"""Run inside a sentence-transformers venv: save word-model folders, or load one and encode.

usage: python word_models.py save OUT_DIR TEXTS_JSON   (writes OUT_DIR/<stack>/ and OUT_DIR/<stack>.npy)
       python word_models.py load OUT_DIR TEXTS_JSON FOLDER...   (OUT_DIR/<folder name>.npy, .vocab.json: a
           BoW's column order; or .error.txt: why this version could not load or encode it)
       python word_models.py nltk OUT_JSON TEXTS_JSON   (nltk.word_tokenize(text, preserve_line=True) per text)
Kept to APIs every version from 2.2 on has. A stack whose tokenizer needs nltk is skipped without it.
"""

import importlib.util
import json
import os
import sys

import numpy as np

VOCAB = ["PADDING_TOKEN", "the", "The", "man", "food", "eating", "quick", "brown", "fox", "dog", "lazy", "New_York",
         "new", "york", "quick_brown_fox", "hello", "world", "Hello", "café", "façade", "text", "word", "UPPER", "case",
         "password", "Paris", "France", "capital", "city", "vectors", "embeddings", "fine", "it's", "can't", "'s",
         "n't", "Numbers", "1", "2", "10", "email", "spaces", "html", "return", "a", "b", "add", "users", "42", ""]
WEIGHTS = {"food": 2.5, "man": 0.5, "the": 0.1, "hello": 3.0, "quick": 1.5, "new_york": 4.0}
STACKS = ["ws", "ws-lower", "phrase", "bow", "bow-binary"]


def build(stack, models):
    rng = np.random.RandomState(len(stack))
    table = rng.randn(len(VOCAB), 6).astype(np.float32)
    pool = models.Pooling(6, pooling_mode_mean_tokens=True)
    if stack == "ws":
        tok = models.tokenizer.WhitespaceTokenizer(vocab=VOCAB)
        weights = models.WordWeights(vocab=VOCAB, word_weights=WEIGHTS, unknown_word_weight=0.75)
        return [models.WordEmbeddings(tok, table), weights, pool]
    if stack == "ws-lower":
        tok = models.tokenizer.WhitespaceTokenizer(vocab=VOCAB, stop_words=["a", "the", "is"], do_lower_case=True)
        pool = models.Pooling(6, pooling_mode_mean_tokens=False, pooling_mode_mean_sqrt_len_tokens=True)
        return [models.WordEmbeddings(tok, table), pool]
    if stack == "phrase":
        tok = models.tokenizer.PhraseTokenizer(vocab=VOCAB, do_lower_case=True)
        return [models.WordEmbeddings(tok, table), models.WordWeights(VOCAB, WEIGHTS), pool]
    cumulative = stack == "bow"
    return [models.BoW(vocab=VOCAB[1:], word_weights=WEIGHTS, unknown_word_weight=0.5,
                       cumulative_term_frequency=cumulative)]


def save(out_dir, texts):
    from sentence_transformers import SentenceTransformer, models

    for stack in STACKS:
        if stack == "phrase" and importlib.util.find_spec("nltk") is None:
            continue
        model = SentenceTransformer(modules=build(stack, models), device="cpu")
        model.save(os.path.join(out_dir, stack))
        try:
            embeddings = model.encode(texts, batch_size=16, convert_to_numpy=True)
        except StopIteration:  # ST 2.7 cannot encode a module stack without parameters (BoW)
            continue
        np.save(os.path.join(out_dir, stack + ".npy"), embeddings)


def load(out_dir, texts, folders):
    from sentence_transformers import SentenceTransformer

    for folder in folders:
        out = os.path.join(out_dir, os.path.basename(folder))
        try:
            model = SentenceTransformer(folder, device="cpu")
            np.save(out + ".npy", model.encode(texts, batch_size=16, convert_to_numpy=True))
        except Exception as e:  # noqa: BLE001 - the test reads why
            with open(out + ".error.txt", "w", encoding="utf-8") as f:
                f.write(f"{type(e).__name__}: {e}")
            continue
        with open(out + ".vocab.json", "w", encoding="utf-8") as f:
            json.dump(getattr(model[0], "vocab", None), f)


def main():
    mode, out, texts_path, *folders = sys.argv[1:]
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    if mode == "save":
        save(out, texts)
    elif mode == "load":
        load(out, texts, folders)
    else:
        from nltk import word_tokenize

        with open(out, "w", encoding="utf-8") as f:
            json.dump([word_tokenize(t, preserve_line=True) for t in texts], f)


main()
