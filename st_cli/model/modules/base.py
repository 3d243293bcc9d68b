"""The module contract (docs/explanation/design.md): what every built-in and custom module implements.

The method names are sentence-transformers' own, so a module written for st also loads in
sentence-transformers (with `trust_remote_code=True`), and a module written for ST ports by
changing its base class.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from st_cli.errors import ModelFolderError, StError, first_line
from st_cli.format import hub, layout
from st_cli.format.spec import TypeSpec
from st_cli.model import registry

Features = dict[str, Tensor]


class Module(torch.nn.Module):
    """A step of the stack: reads and extends the `features` dict."""

    type_name: ClassVar[str | None] = None  # the registry name; set by @register
    spec: ClassVar[TypeSpec | None] = None  # the type's torch-free spec (st_cli/format/specs/); set by @register
    config_keys: ClassVar[list[str]] = []  # constructor kwargs saved to config.json
    save_in_root: ClassVar[bool] = False
    forward_kwargs: ClassVar[set[str]] = set()  # encode-time kwargs this module accepts
    # Reads `all_layer_embeddings` (every hidden state): a stack built with it asks its input module for them.
    needs_all_layer_embeddings: ClassVar[bool] = False
    tokenize_kwargs: ClassVar[set[str]] = set()  # of those, the ones its tokenize() takes too (as the first module)
    # True while a module's weights come from a random init rather than a trained checkpoint.
    untrained: bool = False

    def forward(self, features: Features, **kwargs: Any) -> Features:
        raise NotImplementedError

    def probe_kwargs(self) -> dict[str, Any]:
        """Encode-time kwargs st's own checks need to run this module at all (none for most)."""
        return {}

    def check_call(self, kwargs: dict[str, Any]) -> None:
        """Refuse, before any text is encoded, encode-time kwargs this module cannot run with (StError)."""

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}

    def get_sentence_embedding_dimension(self) -> int | None:
        """The width of `sentence_embedding` after this module, or None if it does not change it."""
        return None

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        """Fill dimension kwargs from the incoming width, check them, and give the outgoing width.

        Runs before any weights load, so a recipe's dimension errors come first. Raises
        ConfigValueError naming the key at fault.
        """
        return kwargs, input_dim

    # ------------------------------------------------------------ persistence

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        """Write config.json (in the chosen dialect) and, if the module has parameters, its weights."""
        folder = Path(output_path)
        layout.write_module_config(folder, _config_dialect(type(self)), self.get_config_dict(), format)
        if any(True for _ in self.parameters()):
            self.save_weights(folder, pickled_too=format == "portable")

    def save_weights(self, folder: Path, *, pickled_too: bool = False) -> None:
        """model.safetensors, plus pytorch_model.bin for ST <= 3.0 when asked."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / layout.SAFETENSORS_WEIGHTS))
        if pickled_too:
            torch.save(state, folder / layout.PICKLED_WEIGHTS)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Module:
        """Build from the folder's config and weights; the signature ST >= 5.4 calls too."""
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        module = cls(**layout.read_module_config(_config_dialect(cls), folder))
        module.load_weights(folder)
        return module

    def load_weights(self, folder: Path) -> None:
        """Load model.safetensors, else pytorch_model.bin (weights only), with a strict key match."""
        if not any(True for _ in self.parameters()):
            return
        state = read_state(folder)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise ModelFolderError(f"{folder}: weights do not fit the config: {first}") from None


def read_state(folder: Path) -> dict[str, Tensor]:
    """A module folder's tensors: model.safetensors, else pytorch_model.bin (weights only)."""
    safetensors_path, pickled_path = folder / layout.SAFETENSORS_WEIGHTS, folder / layout.PICKLED_WEIGHTS
    if safetensors_path.is_file():
        return load_safetensors_weights(safetensors_path)
    if pickled_path.is_file():
        return load_pickled_weights(pickled_path)
    raise ModelFolderError(f"{folder}: no {layout.SAFETENSORS_WEIGHTS} or {layout.PICKLED_WEIGHTS}")


def load_safetensors_weights(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, MemoryError) as e:
        raise ModelFolderError(f"{path}: unreadable safetensors file ({first_line(e)})") from None


def load_pickled_weights(path: Path) -> dict[str, Tensor]:
    """Plain tensors only (weights_only=True): anything that would need code to unpickle is refused, in one line."""
    state = load_pickle(path, advice="convert it to safetensors")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFolderError(f"{path}: expected a mapping of tensor names to tensors")
    return state


def load_pickle(path: Path, *, advice: str, mmap: bool = False) -> Any:
    """The one place st unpickles (module weights, transformers' pytorch_model.bin, training checkpoints).

    torch.load with weights_only=True: tensors, numbers, strings and containers only. A pickle that
    would need code to rebuild is refused before any of it runs: one line naming the file and
    `advice`, not torch's five-line UnpicklingError. `mmap`: map the tensors instead of reading them
    (a file in torch's zip format), for a caller that only needs to know the file is safe.
    """
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing; one line is enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        message = "refused: it needs more than plain tensors to unpickle (loaded with weights_only=True)"
        raise ModelFolderError(f"{path}: {message}; {advice}") from None
    except (RuntimeError, EOFError, OSError, ValueError, MemoryError) as e:
        raise ModelFolderError(f"{path}: unreadable pickled weights ({first_line(e)})") from None


def check_transformers_pickles(folder: Path) -> None:
    """Before transformers' from_pretrained reads `folder`: where it would unpickle (no safetensors
    weights, a pytorch_model.bin or the shards of its index), load_pickle reads those files first,
    so a pickle that needs code is refused in one line naming the file, as every other pickle is.
    The tensors are memory-mapped, not read; transformers then loads what was found safe."""
    if any((folder / name).is_file() for name in (layout.SAFETENSORS_WEIGHTS, SAFETENSORS_INDEX)):
        return  # transformers prefers safetensors and never opens the pickles beside them
    for path in _pickled_checkpoint_files(folder):
        load_pickle(path, advice="convert it to safetensors", mmap=True)


SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLED_INDEX = "pytorch_model.bin.index.json"


def _pickled_checkpoint_files(folder: Path) -> list[Path]:
    """The pickles transformers would read: pytorch_model.bin, else the shards its index lists."""
    if (folder / layout.PICKLED_WEIGHTS).is_file():
        return [folder / layout.PICKLED_WEIGHTS]
    try:
        index = layout.read_json(folder / PICKLED_INDEX)
    except (StError, OSError):
        return []  # none, or a broken index: transformers' own one-line error says so
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    shards = sorted({v for v in weight_map.values() if isinstance(v, str)}) if isinstance(weight_map, dict) else []
    return [folder / shard for shard in shards if (folder / shard).is_file()]


def _config_dialect(cls: type[Module]) -> TypeSpec | None:
    """A registered type's codec; a custom class (even a subclass of one) writes its config_keys as they are."""
    return cls.spec if registry.is_registered(cls) else None


def local_folder(model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Path:
    """The module's folder on disk. st passes a local folder; sentence-transformers may pass a Hub id,
    with its own `cache_folder`, `revision`, `token` and `local_files_only`."""
    root = Path(model_name_or_path)
    if not root.is_dir():
        root = hub.snapshot(
            str(model_name_or_path),
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_folder"),
            token=kwargs.get("token"),
            local_files_only=bool(kwargs.get("local_files_only")),
        )
    return root / subfolder


class InputModule(Module):
    """The first module of a stack: turns texts into tensors."""

    save_in_root: ClassVar[bool] = True

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        raise NotImplementedError

    def get_max_seq_length(self) -> int | None:
        return None

    def output_all_layers(self) -> None:
        """Give `all_layer_embeddings` from now on (and save that choice); only transformer models can."""
        raise StError(f"{type(self).__name__} has no hidden layers to give (a later module needs all_layer_embeddings)")
