"""CLIPModel: the text tower of a Hugging Face CLIP model (text in, projected text embedding out).

st encodes text only: an image (a PIL image, or a string sentence-transformers 6 would open as one)
is refused in one line rather than embedded as text.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, ModelFolderError, StError, first_line
from st_cli.format import hub, layout
from st_cli.format.specs import SPECS
from st_cli.format.specs.clip_model import CLIP_PREPROCESSOR_CONFIG, CLIP_PROCESSOR_CONFIG
from st_cli.model.modules.base import Features, InputModule, check_transformers_pickles, local_folder
from st_cli.model.registry import register

# What sentence-transformers 6 opens as an image instead of embedding it as text (its modality rules).
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp")


def image_like(item: Any) -> str | None:
    """Why an input would be an image to sentence-transformers (None: it is text)."""
    if not isinstance(item, str):
        return f"a {type(item).__module__}.{type(item).__name__} object, not a string"
    if item.startswith("data:image/"):
        return "an image data URI"
    url = item.startswith(("http://", "https://")) and " " not in item
    path = item.split("?", 1)[0].lower() if url else item.lower()
    if path.endswith(_IMAGE_SUFFIXES) and (url or os.path.isfile(item)):
        return "an image URL" if url else "an image file"
    return None


@register(SPECS["CLIPModel"])
class CLIPModel(InputModule):
    """`model` is a CLIP folder or Hub id (transformers' CLIPModel plus its tokenizer); `processor_name`, as in
    ST, another folder to take the tokenizer and image settings from. The folder st saves holds both."""

    config_keys: ClassVar[list[str]] = ["max_seq_length"]

    def __init__(self, model: str, processor_name: str | None = None, max_seq_length: int | None = None) -> None:
        from transformers import AutoTokenizer
        from transformers import CLIPModel as HFCLIPModel

        super().__init__()
        folder = hub.resolve_model(model)
        processor = hub.resolve_model(processor_name) if processor_name else folder  # ST: tokenizer + image settings
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(processor), use_fast=True, trust_remote_code=False)
            check_transformers_pickles(folder)  # a pickle that needs code: one line, before transformers opens it
            self.model = HFCLIPModel.from_pretrained(str(folder), dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, pickle.UnpicklingError) as e:
            raise ModelFolderError(f"{folder}: cannot load the CLIP model: {first_line(e)}") from None
        self.model.eval()
        self.max_seq_length = max_seq_length or int(self.tokenizer.model_max_length)
        self.image_processor = _image_processor_config(processor)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        """The projection width, from the CLIP folder's config.json (before any weights load)."""
        if "model" not in kwargs:
            raise ConfigValueError("model", "required: a CLIP model folder or Hub id")
        try:
            folder = hub.resolve_model(kwargs["model"])
        except ModelFolderError as e:
            raise ConfigValueError("model", str(e)) from None
        config = layout.read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        if not isinstance(config, dict) or config.get("model_type") != "clip":
            raise ConfigValueError("model", f"{folder}: no config.json with model_type clip; is it a CLIP model?")
        return kwargs, config.get("projection_dim", 512)  # transformers' default

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        for index, item in enumerate(texts):
            why = image_like(item)
            if why is not None:
                raise StError(f"input {index} is {why}: st's CLIPModel encodes text only (no image inputs)")
        return dict(
            self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt")
        )

    def forward(self, features: Features, **kwargs: Any) -> Features:
        out = self.model.get_text_features(
            input_ids=features["input_ids"], attention_mask=features.get("attention_mask")
        )
        embedding = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns an output
        features["sentence_embedding"] = embedding.float()
        return features

    def get_max_seq_length(self) -> int | None:
        return self.max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.text_projection.out_features)

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        """The transformers model and tokenizer, the image-processor settings ST's CLIPProcessor needs, the config."""
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        processor = {"processor_class": "CLIPProcessor"}
        if format == "portable":  # transformers 4.x read the flat preprocessor_config.json; 5.x still do
            layout.write_json(folder / CLIP_PREPROCESSOR_CONFIG, self.image_processor | processor)
            layout.make_tokenizer_config_portable(folder)
            layout.make_tokenizer_json_portable(folder)
        else:
            layout.write_json(folder / CLIP_PROCESSOR_CONFIG, {"image_processor": self.image_processor} | processor)
        layout.write_module_config(folder, self.spec, self.get_config_dict(), format)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> CLIPModel:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        return cls(str(folder), **layout.read_module_config(SPECS["CLIPModel"], folder))


def _image_processor_config(folder: Path) -> dict[str, Any]:
    """The image processor's settings, from either transformers generation's file (st only passes them on)."""
    nested = folder / CLIP_PROCESSOR_CONFIG
    if nested.is_file():
        raw = layout.read_json(nested)
        if isinstance(raw, dict) and isinstance(raw.get("image_processor"), dict):
            return dict(raw["image_processor"])
    flat = folder / CLIP_PREPROCESSOR_CONFIG
    if flat.is_file():
        raw = layout.read_json(flat)
        if isinstance(raw, dict):
            return {k: v for k, v in raw.items() if k != "processor_class"}
    raise ModelFolderError(f"{folder}: no {CLIP_PROCESSOR_CONFIG} or {CLIP_PREPROCESSOR_CONFIG} (CLIP image settings)")
