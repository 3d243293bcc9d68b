"""MLMTransformer: a Transformer whose token embeddings are its masked-language-model head's logits
(one per vocabulary token), what SpladePooling pools into a sparse vector."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from st_cli.errors import ConfigValueError
from st_cli.format import hub, layout
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features
from st_cli.model.modules.transformer import MODEL_INPUTS, Transformer, load_auto_model
from st_cli.model.registry import register


@register(SPECS["MLMTransformer"])
class MLMTransformer(Transformer):
    """`model`: a folder (or Hub id, `package:pkg/dir`) of a transformers fill-mask model (BertForMaskedLM, …)."""

    auto_class: ClassVar[str] = "AutoModelForMaskedLM"
    runs_light: ClassVar[bool] = True  # st_cli.bert runs BERT's MLM head too

    def _load_model(self, folder: Path, *, light: bool) -> Any:
        if light:
            from st_cli.model import bert

            model = bert.load_masked_lm(folder)
            if model is not None:
                return model
        return load_auto_model(folder, self.auto_class, self.load_args)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        kwargs, _ = super().plan(kwargs, input_dim)
        folder = hub.resolve_model(kwargs["model"], revision=kwargs.get("revision"))
        vocab = layout.read_json(folder / "config.json").get("vocab_size")
        if not isinstance(vocab, int):
            raise ConfigValueError("model", f"{folder}/config.json: no vocab_size; is it a fill-mask model?")
        return kwargs, vocab

    def forward(self, features: Features, **kwargs: Any) -> Features:
        inputs = {k: features[k] for k in MODEL_INPUTS if k in features}
        features["token_embeddings"] = self.auto_model(**inputs, return_dict=True).logits
        return features

    def full_model(self) -> Any:
        """transformers' BertForMaskedLM in place of st_cli.bert's (the same weights), as Transformer.full_model."""
        from st_cli.model import bert

        if isinstance(self.auto_model, bert.BertMaskedLM):
            light = self.auto_model
            full = load_auto_model(self.folder, self.auto_class, self.load_args)
            moved = full.load_state_dict(light.state_dict(), strict=False)
            if moved.unexpected_keys or any(not k.startswith("cls.predictions.decoder.") for k in moved.missing_keys):
                raise RuntimeError(f"st_cli.model.bert and transformers name BertForMaskedLM's weights apart: {moved}")
            full.tie_weights()
            self.auto_model = full.to(light.cls.predictions.bias.device)
        if isinstance(self.tokenizer, bert.FastTokenizer):
            return super().full_model()
        return self.auto_model

    def output_all_layers(self) -> None:
        raise ConfigValueError(None, "MLMTransformer gives vocabulary logits, not hidden layers")

    def get_sentence_embedding_dimension(self) -> int | None:
        return int(self.auto_model.config.vocab_size)

    def output_vocabulary(self) -> list[str]:
        """Token strings by id: what each output dimension stands for (`st encode --decode`)."""
        return vocabulary(self.folder)


def vocabulary(folder: Path) -> list[str]:
    """A fast tokenizer's tokens, by id (ids no token has stay "")."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [""] * (max(vocab.values(), default=-1) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    return tokens
