"""A BERT folder's tokenizer on the `tokenizers` library alone: the calls st makes of transformers'
fast tokenizer, for folders where transformers would run tokenizer.json as it is.

Torch-free (torch is imported only for `return_tensors="pt"`): `st encode --backend onnx` tokenizes
with it without importing torch or transformers (model/runtime.py); model/bert.py re-exports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# tokenizer_config.json classes that load tokenizer.json as it is (generic), and BERT's, which
# transformers rebuilds from its settings (the file must then already be what it builds).
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
BERT_TOKENIZERS = ("BertTokenizer", "BertTokenizerFast")
SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Other tokenizer_config.json keys that change nothing st asks of the tokenizer (is_local, local_files_only:
# how transformers 5 was asked to load it, saved along); any key not listed
# (or not at its listed value) leaves the folder to transformers.
HARMLESS_KEYS = {
    "name_or_path", "tokenizer_class", "model_max_length", "clean_up_tokenization_spaces", "special_tokens_map_file",
    "do_basic_tokenize", "backend", "added_tokens_decoder", "do_lower_case", "tokenize_chinese_chars",
    "strip_accents", "never_split", "is_local", "local_files_only", *SPECIAL_TOKENS,
}  # fmt: skip
FIXED_KEYS = {"padding_side": "right", "truncation_side": "right", "extra_special_tokens": {}, "pad_token_type_id": 0}
# What reading a damaged tokenizer file can raise (unreadable, not JSON, nested too deep, values of the
# wrong type where the checks look inside): the folder then goes to transformers, which says what is wrong.
DAMAGED = (OSError, ValueError, RecursionError, TypeError, AttributeError, KeyError)
# What transformers' model_max_length is when no file says (PreTrainedTokenizerBase's VERY_LARGE_INTEGER).
UNLIMITED = int(1e30)


class FastTokenizer:
    """The calls st makes of transformers' fast tokenizer, on the `tokenizers` library alone.

    Padding and truncation are set on every call, as transformers does (a tokenizer.json may carry
    its own, e.g. all-MiniLM-L6-v2's fixed padding to 128).
    """

    is_fast = True
    padding_side = "right"
    truncation_side = "right"

    def __init__(self, backend: Any, specials: dict[str, str], model_max_length: int, type_ids: bool) -> None:
        self.backend_tokenizer = backend
        self.type_ids = type_ids  # transformers' model_input_names: BERT's has token_type_ids, the generic one not
        self.model_max_length = model_max_length
        self.pad_token = specials["pad_token"]
        self.pad_token_id = backend.token_to_id(self.pad_token)
        self.all_special_ids = [backend.token_to_id(token) for token in dict.fromkeys(specials.values())]

    def __call__(
        self,
        texts: str | list[str],
        *,
        add_special_tokens: bool = True,
        padding: bool = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
        verbose: bool = True,
    ) -> dict[str, Any]:
        backend = self.backend_tokenizer
        if truncation not in (False, True, "longest_first"):
            raise ValueError(f"truncation {truncation!r} is not supported here")
        limit = max_length if max_length is not None else self.model_max_length
        if truncation and limit < UNLIMITED:
            backend.enable_truncation(limit, stride=0, strategy="longest_first", direction="right")
        else:
            backend.no_truncation()
        if padding:
            backend.enable_padding(direction="right", pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token)
        else:
            backend.no_padding()
        single = isinstance(texts, str)
        encodings = backend.encode_batch([texts] if single else texts, add_special_tokens=add_special_tokens)
        fields = {"input_ids": [e.ids for e in encodings]}
        if self.type_ids if return_token_type_ids is None else return_token_type_ids:
            fields["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            fields["attention_mask"] = [e.attention_mask for e in encodings]
        if return_tensors == "pt":
            import torch

            return {k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()}
        if return_tensors == "np":
            return {k: np.array(v, dtype=np.int64) for k, v in fields.items()}
        if return_tensors is not None:
            raise ValueError(f"return_tensors {return_tensors!r} is not supported here")
        return {k: v[0] for k, v in fields.items()} if single else fields


def load_tokenizer(folder: Path) -> FastTokenizer | None:
    """The folder's tokenizer on `tokenizers` alone where transformers would run tokenizer.json as is; else None."""
    try:
        text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        settings = _tokenizer_settings(folder, json.loads(text))
    except DAMAGED:  # transformers reads it again and reports what is wrong in one line
        return None
    if settings is None:
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_str(text)  # the text already read and checked, not the file again
    except Exception:  # noqa: BLE001 - transformers loads it and reports the problem
        return None
    specials = {key: settings[key] for key in SPECIAL_TOKENS}
    if any(backend.token_to_id(token) is None for token in specials.values()):
        return None
    limit = settings.get("model_max_length", UNLIMITED)
    type_ids = settings["tokenizer_class"] in BERT_TOKENIZERS
    return FastTokenizer(backend, specials, int(limit) if isinstance(limit, int | float) else UNLIMITED, type_ids)


def _tokenizer_settings(folder: Path, tokenizer: Any) -> dict[str, Any] | None:
    """tokenizer_config.json (with special_tokens_map.json) where st's FastTokenizer gives what transformers
    would with `tokenizer` (tokenizer.json, parsed). Damaged files raise one of DAMAGED."""
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    specials_file = folder / "special_tokens_map.json"
    specials = json.loads(specials_file.read_text(encoding="utf-8")) if specials_file.is_file() else {}
    if not all(isinstance(x, dict) for x in (settings, specials, tokenizer)):
        return None
    if any(settings.get(key, value) != value for key, value in FIXED_KEYS.items()):
        return None
    if set(settings) - HARMLESS_KEYS - set(FIXED_KEYS) or set(specials) - set(SPECIAL_TOKENS):
        return None
    defaults = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    merged = {**defaults, **specials, **settings}
    if not all(isinstance(merged[key], str) for key in SPECIAL_TOKENS):
        return None  # AddedToken dicts: transformers reads their flags
    added = {t.get("content"): t for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)}
    if any(not added.get(merged[key], {}).get("special") for key in SPECIAL_TOKENS):
        return None  # transformers would add the token itself
    for token_id, entry in (settings.get("added_tokens_decoder") or {}).items():
        if not isinstance(entry, dict) or added.get(entry.get("content"), {}).get("id") != int(token_id):
            return None
    if settings.get("tokenizer_class") in GENERIC_TOKENIZERS:
        return merged
    if settings.get("tokenizer_class") in BERT_TOKENIZERS and _is_bert_as_transformers_builds(tokenizer, merged):
        return merged
    return None


def _is_bert_as_transformers_builds(tokenizer: dict[str, Any], settings: dict[str, Any]) -> bool:
    """tokenizer.json is what transformers' BertTokenizer builds from these settings."""
    model = tokenizer.get("model") or {}
    vocab = model.get("vocab") or {}
    normalizer = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": settings.get("tokenize_chinese_chars", True),
        "strip_accents": settings.get("strip_accents"),
        "lowercase": settings.get("do_lower_case", True),
    }
    cls, sep = settings["cls_token"], settings["sep_token"]
    single = [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    single.append({"SpecialToken": {"id": sep, "type_id": 0}})
    post = tokenizer.get("post_processor") or {}
    return (
        model.get("type") == "WordPiece"
        and model.get("unk_token") == settings["unk_token"]
        and model.get("continuing_subword_prefix", "##") == "##"
        and model.get("max_input_chars_per_word", 100) == 100
        and tokenizer.get("normalizer") == normalizer
        and tokenizer.get("pre_tokenizer") == {"type": "BertPreTokenizer"}
        and post.get("type") == "TemplateProcessing"
        and post.get("single") == single
        and all(post.get("special_tokens", {}).get(t, {}).get("ids") == [vocab.get(t)] for t in (cls, sep))
        and settings.get("never_split") is None
    )
