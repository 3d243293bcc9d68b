"""Transformer: a Hugging Face AutoModel with its fast tokenizer; texts in, token embeddings out.

Loaded by `st encode` (`inference_only`), a BERT folder runs on st_cli/bert.py instead, which gives
the same vectors without importing transformers; `full_model()` swaps transformers' back in.
"""

from __future__ import annotations

import contextlib
import contextvars
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, ModelFolderError, first_line
from st_cli.format import hub, layout
from st_cli.format.spec import hidden_size
from st_cli.format.specs import SPECS
from st_cli.format.specs.transformer import DTYPE_KEYS
from st_cli.model import registry
from st_cli.model.modules.base import Features, InputModule, check_transformers_pickles, local_folder
from st_cli.model.registry import register

# Inputs the HF model is called with, when the tokenizer produced them (as ST does).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# True while a model loads only to run (`st encode`): a BERT folder may then run on st_cli.bert,
# without the import of transformers' modeling code (longer than torch's own, see bert.py).
_INFERENCE_ONLY = contextvars.ContextVar("st_inference_only", default=False)


@contextlib.contextmanager
def inference_only() -> Iterator[None]:
    """Transformers loaded inside run BERT folders on st_cli.bert; `full_model()` gives transformers' model."""
    token = _INFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _INFERENCE_ONLY.reset(token)


@register(SPECS["Transformer"])
class Transformer(InputModule):
    """`model` is a folder, a Hub id or `package:pkg/dir`; the HF weights and tokenizer load from it."""

    config_keys: ClassVar[list[str]] = ["max_seq_length", "do_lower_case"]
    auto_class: ClassVar[str] = "AutoModel"  # the transformers class its weights load into
    runs_light: ClassVar[bool] = True  # read with vars(): a subclass runs on transformers' objects unless it says so

    def __init__(
        self,
        model: str,
        max_seq_length: int | None = None,
        do_lower_case: bool = False,
        revision: str | None = None,
        tokenizer_args: dict[str, Any] | None = None,
        config_args: dict[str, Any] | None = None,
        model_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        folder = hub.resolve_model(model, revision=revision)
        self.source = str(model)
        if not any((folder / name).is_file() for name in layout.TOKENIZER_FILES):
            # transformers would build a 5-token toy tokenizer, and different words would get identical vectors.
            raise ModelFolderError(f"{folder}: no tokenizer files ({', '.join(layout.TOKENIZER_FILES[:3])}, …)")
        # What sentence_bert_config.json hands to transformers, as ST does (format/specs/transformer.py).
        self.load_args = LoadArgs(dict(tokenizer_args or {}), dict(config_args or {}), dict(model_args or {}))
        # st's own class only: a subclass (ST-style custom code, st_compat.Transformer) may call what only
        # transformers' objects have (`auto_model(...)[0]`, `get_input_embeddings`, `save_pretrained`).
        # st_cli.bert runs the folder's config.json as written: any load args go to transformers.
        light = _INFERENCE_ONLY.get() and bool(vars(type(self)).get("runs_light")) and not self.load_args.any()
        self.tokenizer = _load_tokenizer(folder, light=light and not do_lower_case, args=self.load_args)
        self.folder = folder
        self.auto_model = self._load_model(folder, light=light)
        self.auto_model.eval()
        # ST >= 5.4: a tokenizer_args model_max_length is the limit, over max_seq_length (ST 3-5.3 let
        # max_seq_length win; inspect names the folders where the two differ).
        if "model_max_length" in self.load_args.tokenizer:
            max_seq_length = self.tokenizer.model_max_length
        self.max_seq_length = max_seq_length or _default_max_seq_length(folder, self.tokenizer, self.auto_model.config)
        _check_max_seq_length(self.max_seq_length, self.auto_model.config, folder)
        self.tokenizer.model_max_length = self.max_seq_length
        if do_lower_case:
            _lowercase_in_tokenizer(self.tokenizer)
        # Lower-casing now lives in the tokenizer's normalizer, which is what portable folders write.
        self.do_lower_case = False

    def _load_model(self, folder: Path, *, light: bool) -> Any:
        return _load_model(folder, light=light, args=self.load_args)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        if "model" not in kwargs:
            raise ConfigValueError("model", "required: a model folder, a Hub id or package:pkg/dir")
        try:
            folder = hub.resolve_model(kwargs["model"], revision=kwargs.get("revision"))
        except ModelFolderError as e:
            raise ConfigValueError("model", str(e)) from None
        config = layout.read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        hidden = hidden_size(config)
        if hidden is None:
            raise ConfigValueError("model", f"{folder}: no config.json with a hidden size; is it a transformers model?")
        max_len, limit = kwargs.get("max_seq_length"), config.get("max_position_embeddings")
        if max_len is not None and (max_len <= 0 or (isinstance(limit, int) and max_len > limit)):
            raise ConfigValueError("max_seq_length", f"must be between 1 and {limit} for this model, got {max_len}")
        return kwargs, hidden

    # ------------------------------------------------------------ running

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        return dict(
            self.tokenizer(
                texts, padding=True, truncation="longest_first", max_length=self.max_seq_length, return_tensors="pt"
            )
        )

    def forward(self, features: Features, **kwargs: Any) -> Features:
        inputs = {k: features[k] for k in MODEL_INPUTS if k in features}
        out = self.auto_model(**inputs, return_dict=True)
        features["token_embeddings"] = out.last_hidden_state
        # As in ST: the config.json's output_hidden_states decides (WeightedLayerPooling reads them).
        if self.auto_model.config.output_hidden_states and getattr(out, "hidden_states", None) is not None:
            features["all_layer_embeddings"] = out.hidden_states
        return features

    def output_all_layers(self) -> None:
        # Saved in config.json, which is how every ST version knows to give them too.
        self.full_model().config.output_hidden_states = True

    def full_model(self) -> Any:
        """transformers' model and tokenizer, in place of st_cli.bert's (same weights, same ids) where an
        encode loaded those; returns the model."""
        from st_cli.model import bert

        if isinstance(self.tokenizer, bert.FastTokenizer):
            self.tokenizer = _load_tokenizer(self.folder, light=False, args=self.load_args)
            self.tokenizer.model_max_length = self.max_seq_length
        if isinstance(self.auto_model, bert.BertEncoder):
            light = self.auto_model
            full = load_auto_model(self.folder, self.auto_class, self.load_args)
            # The weights as they are now (a caller may have changed them); the pooler keeps the folder's.
            moved = full.load_state_dict(light.state_dict(), strict=False)
            if moved.unexpected_keys or any(not key.startswith("pooler.") for key in moved.missing_keys):
                raise RuntimeError(f"st_cli.model.bert and transformers name BERT's weights differently: {moved}")
            device = light.embeddings.word_embeddings.weight.device
            self.auto_model = full.to(device).train(light.training)
        return self.auto_model

    def get_max_seq_length(self) -> int | None:
        return self.max_seq_length

    def get_word_embedding_dimension(self) -> int:
        return int(self.auto_model.config.hidden_size)

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt adds at the front: its ids without a trailing special token (as ST 6 counts)."""
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return len(ids) - 1 if ids and ids[-1] in self.tokenizer.all_special_ids else len(ids)

    # ------------------------------------------------------------ persistence

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.full_model().save_pretrained(str(folder))  # also puts transformers' tokenizer back, saved next
        self.tokenizer.save_pretrained(str(folder))
        layout.write_module_config(folder, self.spec, self.get_config_dict(), format)
        if format == "portable":
            layout.make_tokenizer_config_portable(folder)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Transformer:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        config = layout.read_module_config(SPECS["Transformer"], folder)
        task = config.pop("transformer_task", None)
        if task == "fill-mask" and cls is Transformer:  # ST >= 5.4's SPLADE: the same model as an MLMTransformer
            return registry.get("MLMTransformer")(str(folder), **config)  # type: ignore[return-value]
        return cls(str(folder), **config)


try:  # huggingface_hub >= 1.0 validates transformers configs with strict dataclasses
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # pragma: no cover - older huggingface_hub

    class StrictDataclassError(Exception):  # type: ignore[no-redef]
        """Never raised: stands in for the class older huggingface_hub versions lack."""


# What transformers raises on a damaged folder (bad JSON, shapes that do not fit, unknown model types, config
# values of the wrong type: huggingface_hub's strict dataclasses).
_LOAD_ERRORS = (
    OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, EOFError, RecursionError, OverflowError,
    StrictDataclassError, pickle.UnpicklingError,
)  # fmt: skip


@dataclass(frozen=True)
class LoadArgs:
    """sentence_bert_config.json's keyword arguments for transformers' tokenizer, AutoConfig and AutoModel."""

    tokenizer: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def any(self) -> bool:
        return bool(self.tokenizer or self.config or self.model)

    def model_kwargs(self) -> dict[str, Any]:
        """model_args but a lower precision: st computes in float32."""
        return {k: v for k, v in self.model.items() if k not in DTYPE_KEYS}


_NO_ARGS = LoadArgs()


def _load_tokenizer(folder: Path, *, light: bool, args: LoadArgs = _NO_ARGS) -> Any:
    """st's own BERT tokenizer where `light` and it gives exactly transformers' ids, else transformers' fast one."""
    if light:
        from st_cli.model import bert

        light_one = bert.load_tokenizer(folder)
        if light_one is not None:
            return light_one
    from transformers import AutoTokenizer

    # Never transformers' auto_map code: left unset, transformers asks on stdin and runs it on "y" (DESIGN §7).
    try:
        options = {**args.tokenizer, "use_fast": True, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **options)
    except _LOAD_ERRORS as e:
        where = folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else folder
        raise ModelFolderError(f"{where}: cannot load the tokenizer: {first_line(e)}") from None
    if not tokenizer.is_fast:
        raise ModelFolderError(f"{folder}: st needs a fast tokenizer (tokenizer.json)")
    return tokenizer


def _load_model(folder: Path, *, light: bool, args: LoadArgs = _NO_ARGS) -> Any:
    """st_cli.model.bert's encoder where `light` and it covers the folder exactly, else transformers' AutoModel."""
    if light:
        from st_cli.model import bert

        model = bert.load(folder)
        if model is not None:
            return model
    return load_auto_model(folder, args=args)


def load_auto_model(folder: Path, auto_class: str = "AutoModel", args: LoadArgs = _NO_ARGS) -> Any:
    """The transformers model, refusing weights that leave parameters at their random init (silently wrong vectors)."""
    import transformers

    check_transformers_pickles(folder)  # a pickle that needs code: one line, before transformers opens it
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), **{**args.config, "trust_remote_code": False})
        options = {**args.model_kwargs(), "dtype": torch.float32, "trust_remote_code": False}
        model, info = getattr(transformers, auto_class).from_pretrained(
            str(folder), config=config, output_loading_info=True, **options
        )
    except _LOAD_ERRORS as e:
        if args.model and isinstance(e, TypeError):  # a keyword the model class does not take
            raise ModelFolderError(f"{folder / layout.SBERT_CONFIG}: model_args: {first_line(e)}") from None
        where = folder / "config.json"
        problem = _first_shape_mismatch(folder) if "mismatched_sizes" in str(e) else None
        raise ModelFolderError(f"{where}: cannot load the transformers model: {problem or first_line(e)}") from None
    # A checkpoint saved without the pooler is common and harmless: sentence embeddings never use it.
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith("pooler."))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        what = f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else f"shapes differ ({mismatched[0]})"
        raise ModelFolderError(f"{folder}: the weights do not fit config.json: {what}")
    return model


def _first_shape_mismatch(folder: Path) -> str | None:
    """transformers only says "see the report above" (a log line): name the first tensor whose shape in
    the weights differs from what config.json builds. The model is built on the meta device: nothing is
    allocated, however large the config's sizes."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        expected = {k: list(v.shape) for k, v in model.state_dict().items()}
        prefix = f"{model.base_model_prefix}."  # checkpoints of task models (BertForMaskedLM) carry it
        for path in sorted(folder.glob("*.safetensors")):
            for name, info in layout.read_safetensors_header(path).items():
                key = name if name in expected else name.removeprefix(prefix)
                shape = info.get("shape") if isinstance(info, dict) else None
                if key in expected and shape is not None and list(shape) != expected[key]:
                    return f"{path.name}: {name} has shape {shape}, config.json makes it {expected[key]}"
    except Exception:  # noqa: BLE001 - only a better message; the caller has a plain one
        return None
    return None


def _default_max_seq_length(folder: Path, tokenizer: Any, config: Any) -> int:
    """ST's rule: the folder's sentence_bert_config, else the tokenizer limit capped by the positions."""
    sbert = layout.read_module_config(SPECS["Transformer"], folder)
    if isinstance(sbert.get("max_seq_length"), int):
        return int(sbert["max_seq_length"])
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    return int(min(x for x in limits if isinstance(x, int) and x > 0))


def _check_max_seq_length(value: Any, config: Any, folder: Path) -> None:
    """A loaded folder's max_seq_length must be a positive integer the position embeddings cover."""
    limit = getattr(config, "max_position_embeddings", None)
    where = folder / layout.SBERT_CONFIG
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelFolderError(f"{where}: max_seq_length must be a positive integer, got {value!r}")
    if isinstance(limit, int) and value > limit:
        raise ModelFolderError(f"{where}: max_seq_length {value} exceeds the model's {limit} position embeddings")


def _lowercase_in_tokenizer(tokenizer: Any) -> None:
    """Put a Lowercase normalizer in front of the fast tokenizer's own, as ST >= 5.4 does."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    steps = [normalizers.Lowercase()] + ([current] if current is not None else [])
    backend.normalizer = normalizers.Sequence(steps)
