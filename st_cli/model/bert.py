"""BERT's encoder in plain torch, for `st encode`: transformers' BertModel without importing it.

Importing transformers' modeling code (modeling_utils pulls in torch._dynamo, torch.distributed,
FSDP, scipy.optimize, …) took longer than importing torch itself, and `st encode` paid it before
its first batch. For the common case, a BERT folder run for inference, this module runs the same
operations in the same order on the same weights (read with safetensors), so the embeddings are
the ones BertModel gives. Anything it does not cover exactly (other model types, relative position
embeddings, another activation, hidden states of every layer, weights it cannot map one to one)
goes to transformers as before: `load` returns None and the caller loads the AutoModel.

Parameter names are BertModel's (minus the pooler, which sentence embeddings never use), so
`state_dict()` moves between the two as is (`Transformer.full_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

WEIGHTS = "model.safetensors"
# config.json values this module implements; any other value of these keys goes to transformers.
SUPPORTED = {
    "model_type": ("bert",),
    "hidden_act": ("gelu",),
    "position_embedding_type": (None, "absolute"),
    "is_decoder": (None, False),
    "add_cross_attention": (None, False),
    "output_hidden_states": (None, False),
    "output_attentions": (None, False),
    "chunk_size_feed_forward": (None, 0),
    "_attn_implementation": (None, "sdpa"),
    "attn_implementation": (None, "sdpa"),
}
REQUIRED = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "type_vocab_size",
)  # fmt: skip


def load(folder: Path) -> BertEncoder | None:
    """The folder's BERT on this module, in float32; None where transformers must load it."""
    config = _supported_config(folder)
    if config is None or not (folder / WEIGHTS).is_file():
        return None
    from safetensors import SafetensorError, safe_open

    wanted = expected_shapes(config)
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            if not set(weights.keys()).issuperset(wanted):
                return None  # other names (a "bert." prefix, gamma/beta): transformers maps them
            if any(list(weights.get_slice(name).get_shape()) != shape for name, shape in wanted.items()):
                return None  # transformers names the tensor that does not fit
            tensors = {name: weights.get_tensor(name) for name in wanted}
    except (OSError, SafetensorError, ValueError):
        return None
    if not all(t.is_floating_point() for t in tensors.values()):
        return None
    model = BertEncoder(config)
    model.load_state_dict({k: t.to(torch.float32) for k, t in tensors.items()}, strict=True, assign=True)
    return model.eval()


def load_masked_lm(folder: Path) -> BertMaskedLM | None:
    """A BertForMaskedLM folder on this module (encoder + MLM head, logits out), in float32; None where
    transformers must load it (another head, an untied decoder, names or shapes that differ)."""
    config = _supported_config(folder)
    if config is None or not (folder / WEIGHTS).is_file() or config.__dict__.get("tie_word_embeddings") is False:
        return None
    from safetensors import SafetensorError, safe_open

    wanted = {f"bert.{name}": shape for name, shape in expected_shapes(config).items()} | _head_shapes(config)
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            names = set(weights.keys())
            if not names.issuperset(wanted) or names - set(wanted) - {"cls.predictions.decoder.weight"}:
                return None
            if any(list(weights.get_slice(name).get_shape()) != shape for name, shape in wanted.items()):
                return None
            tensors = {name: weights.get_tensor(name) for name in wanted}
    except (OSError, SafetensorError, ValueError):
        return None
    if not all(t.is_floating_point() for t in tensors.values()):
        return None
    model = BertMaskedLM(config)
    model.load_state_dict({k: t.to(torch.float32) for k, t in tensors.items()}, strict=True, assign=True)
    return model.eval()


def _head_shapes(config: SimpleNamespace) -> dict[str, list[int]]:
    hidden = config.hidden_size
    return {
        "cls.predictions.transform.dense.weight": [hidden, hidden],
        "cls.predictions.transform.dense.bias": [hidden],
        "cls.predictions.transform.LayerNorm.weight": [hidden],
        "cls.predictions.transform.LayerNorm.bias": [hidden],
        "cls.predictions.bias": [config.vocab_size],
    }


def expected_shapes(config: SimpleNamespace) -> dict[str, list[int]]:
    """BertModel's tensors (without the pooler) and their shapes, from config.json alone: checked
    against the weights' header before anything is allocated (a config can ask for any size)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": [config.vocab_size, hidden],
        "embeddings.position_embeddings.weight": [config.max_position_embeddings, hidden],
        "embeddings.token_type_embeddings.weight": [config.type_vocab_size, hidden],
        "embeddings.LayerNorm.weight": [hidden],
        "embeddings.LayerNorm.bias": [hidden],
    }
    dense = {
        "attention.self.query": [hidden, hidden],
        "attention.self.key": [hidden, hidden],
        "attention.self.value": [hidden, hidden],
        "attention.output.dense": [hidden, hidden],
        "intermediate.dense": [inner, hidden],
        "output.dense": [hidden, inner],
    }
    for n in range(config.num_hidden_layers):
        for name, shape in dense.items():
            shapes[f"encoder.layer.{n}.{name}.weight"] = shape
            shapes[f"encoder.layer.{n}.{name}.bias"] = shape[:1]
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"encoder.layer.{n}.{norm}.weight"] = [hidden]
            shapes[f"encoder.layer.{n}.{norm}.bias"] = [hidden]
    return shapes


def _supported_config(folder: Path) -> SimpleNamespace | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # transformers reports a damaged file
        return None
    if not isinstance(config, dict) or any(config.get(key) not in allowed for key, allowed in SUPPORTED.items()):
        return None
    sizes = [config.get(key) for key in REQUIRED]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        return None
    if config["hidden_size"] % config["num_attention_heads"]:
        return None
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, float | int) or isinstance(eps, bool):
        return None
    return SimpleNamespace(**{**config, "layer_norm_eps": float(eps), "output_hidden_states": False})


class BertEncoder(nn.Module):
    """BertModel's forward for inference: embeddings, then the layers; `last_hidden_state` out."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SimpleNamespace:
        if not return_dict:  # transformers' tuple is not what this gives: never a silently different shape
            raise ValueError("st_cli.model.bert.BertEncoder returns last_hidden_state by name only (return_dict=True)")
        hidden = self.embeddings(input_ids, token_type_ids)
        mask = _attention_mask(attention_mask, hidden.device)
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
        return SimpleNamespace(last_hidden_state=hidden, hidden_states=None)


class BertMaskedLM(nn.Module):
    """BertForMaskedLM's forward for inference: the encoder, then the prediction head (dense, gelu,
    LayerNorm, the word embeddings' transpose plus a bias); `logits` out. Parameter names are transformers'."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.bert = BertEncoder(config)
        self.cls = _Heads(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SimpleNamespace:
        hidden = self.bert(input_ids, attention_mask, token_type_ids, return_dict=return_dict).last_hidden_state
        head = self.cls.predictions
        hidden = head.transform.LayerNorm(nn.functional.gelu(head.transform.dense(hidden)))
        logits = nn.functional.linear(hidden, self.bert.embeddings.word_embeddings.weight, head.bias)
        return SimpleNamespace(logits=logits, hidden_states=None)


class _Transform(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.dense = _linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class _Predictions(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.transform = _Transform(config)
        self.bias = nn.Parameter(torch.empty(config.vocab_size))


class _Heads(nn.Module):
    """`cls.predictions`: transformers' names for BERT's MLM head (its decoder is the word embeddings, tied)."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.predictions = _Predictions(config)


def _attention_mask(attention_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """As transformers builds it for sdpa: None without padding, else keys allowed, [batch, 1, query, key]."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keys = attention_mask.to(device=device, dtype=torch.bool)
    length = keys.shape[-1]
    return keys[:, None, None, :].expand(-1, 1, length, length)


class _Embeddings(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.position_ids: torch.Tensor
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


def _linear(width_in: int, width_out: int) -> nn.Linear:
    """A torch Linear left uninitialized: `load` assigns the weights (random init of BERT-base's took ~0.5 s)."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.in_features, layer.out_features = width_in, width_out
    layer.weight = nn.Parameter(torch.empty(width_out, width_in))
    layer.bias = nn.Parameter(torch.empty(width_out))
    return layer


def _embedding(rows: int, width: int) -> nn.Embedding:
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class _Encoder(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class _Layer(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _Output(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class _Attention(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _Output(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.dense = _linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(hidden))


class _SelfAttention(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = _linear(config.hidden_size, config.hidden_size)
        self.key = _linear(config.hidden_size, config.hidden_size)
        self.value = _linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length = hidden.shape[:2]
        shape = (batch, length, -1, self.head_size)
        if torch.is_autocast_enabled(hidden.device.type):  # cast once for the three projections, not thrice
            hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
        query, key, value = (proj(hidden).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        out = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=0.0, scale=self.head_size**-0.5, is_causal=False
        )
        return out.transpose(1, 2).reshape(batch, length, -1)  # heads side by side again: [batch, length, hidden]


class _Output(nn.Module):
    """A dense layer, then LayerNorm of it plus the residual."""

    def __init__(self, width_in: int, width_out: int, eps: float) -> None:
        super().__init__()
        self.dense = _linear(width_in, width_out)
        self.LayerNorm = nn.LayerNorm(width_out, eps=eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


# ---------------------------------------------------------------- the tokenizer

# tokenizer_config.json classes that load tokenizer.json as it is (generic), and BERT's, which
# transformers rebuilds from its settings (the file must then already be what it builds).
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
BERT_TOKENIZERS = ("BertTokenizer", "BertTokenizerFast")
SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Other tokenizer_config.json keys that change nothing st asks of the tokenizer; any key not listed
# (or not at its listed value) leaves the folder to transformers.
HARMLESS_KEYS = {
    "name_or_path", "tokenizer_class", "model_max_length", "clean_up_tokenization_spaces", "special_tokens_map_file",
    "do_basic_tokenize", "backend", "added_tokens_decoder", "do_lower_case", "tokenize_chinese_chars",
    "strip_accents", "never_split", *SPECIAL_TOKENS,
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
            return {k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()}
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
