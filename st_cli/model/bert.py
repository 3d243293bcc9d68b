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


def load(folder: Path, prefix: str = "") -> BertEncoder | None:
    """The folder's BERT on this module, in float32; None where transformers must load it.

    `prefix`: where the encoder's tensors sit in the file ("bert." in a BertForSequenceClassification).
    """
    config = _supported_config(folder)
    if config is None or not (folder / WEIGHTS).is_file():
        return None
    from safetensors import SafetensorError, safe_open

    wanted = expected_shapes(config)
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            if not set(weights.keys()).issuperset(prefix + name for name in wanted):
                return None  # other names (a "bert." prefix, gamma/beta): transformers maps them
            if any(list(weights.get_slice(prefix + name).get_shape()) != shape for name, shape in wanted.items()):
                return None  # transformers names the tensor that does not fit
            tensors = {name: weights.get_tensor(prefix + name) for name in wanted}
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
    linear_then_gelu = True  # forward is gelu(dense(x)): encode/device.py runs it as one oneDNN call on a CPU

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


# The tokenizer lives in a torch-free module (the ONNX path tokenizes with it); its names stay here too.
from st_cli.model.fast_tokenizer import (  # noqa: E402
    BERT_TOKENIZERS,
    DAMAGED,
    GENERIC_TOKENIZERS,
    SPECIAL_TOKENS,
    UNLIMITED,
    FastTokenizer,
    load_tokenizer,
)

__all__ = [
    "BERT_TOKENIZERS", "DAMAGED", "GENERIC_TOKENIZERS", "SPECIAL_TOKENS", "UNLIMITED", "BertEncoder",
    "FastTokenizer", "load", "load_tokenizer",
]  # fmt: skip
