"""What a custom module file written for sentence-transformers imports from it, supplied by st.

A module written for sentence-transformers (ST) starts with `from sentence_transformers.models import
Module` (ST 5.0–5.3), `from sentence_transformers.base.modules import Module` (ST >= 5.4),
`...sentence_transformer.modules import Transformer` (the docs' spelling since 5.4), and so on. While
st imports such a file (only with trust), `supplied()` puts a stand-in package under every one of
those paths in `sys.modules`; afterwards whatever was there before (a real, already imported ST)
is put back, so nothing else in the process sees the stand-in.

The stand-in is used even when sentence-transformers is installed, deliberately: the classes it
gives are st modules (st's Model runs, saves and inspects them like its own), importing real ST
costs seconds, and one folder then gives the same embeddings on every machine, with or without ST.
Its semantics follow ST 6.2's (`load` builds from `config.json` alone; `load_torch_weights`,
`save_config`, ...), which the tests check against ST itself. A name it does not supply is a
one-line import error naming it.

Classes that are plain `torch.nn.Module`s with `save(path)` / `load(path)` (the ST <= 5.3 contract)
need nothing from here to import; `adapt()` wraps them so st can run and save them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import Tensor

from st_cli.errors import ModelFolderError, StError
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.model.modules import base
from st_cli.model.modules import transformer as st_transformer

ROOT = "sentence_transformers"
Features = dict[str, Any]


# ---------------------------------------------------------------- files, as ST's util.file_io finds them


def load_file_path(
    model_name_or_path: str,
    filename: str,
    subfolder: str = "",
    token: bool | str | None = None,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> str | None:
    """The path of `filename` in the module's folder, or None when there is no such file (as ST)."""
    folder = _folder(model_name_or_path, subfolder, token, cache_folder, revision, local_files_only)
    path = _inside(folder, filename)
    return str(path) if path.exists() else None


def load_dir_path(
    model_name_or_path: str,
    subfolder: str = "",
    token: bool | str | None = None,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> str | None:
    """The module's folder (downloaded from the Hub cache when given a repository id), or None."""
    folder = _folder(model_name_or_path, subfolder, token, cache_folder, revision, local_files_only)
    return str(folder) if folder.is_dir() else None


def _folder(
    model_name_or_path: str,
    subfolder: str,
    token: bool | str | None,
    cache_folder: str | None,
    revision: str | None,
    local_files_only: bool,
) -> Path:
    root = base.local_folder(
        model_name_or_path, "", token=token, cache_folder=cache_folder, revision=revision,
        local_files_only=local_files_only,
    )  # fmt: skip
    return _inside(root, subfolder)


def _inside(root: Path, relative: str | os.PathLike[str]) -> Path:
    """`root / relative`, refused when it (or a symlink on the way) leaves `root` (DESIGN §7)."""
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise ModelFolderError(f"{path}: a custom module may only read files inside its model folder")
    return path


# ---------------------------------------------------------------- the ST API, shared by every stand-in class


class SentenceTransformersApi:
    """ST's Module helpers (ST >= 5.0) on top of st's own module classes; marks a class as ST-style."""

    config_file_name: ClassVar[str] = "config.json"
    config_key_renames: ClassVar[dict[str, str]] = {}

    @classmethod
    def load_config(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        config_filename: str | None = None,
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> dict[str, Any]:
        path = load_file_path(
            model_name_or_path, config_filename or cls.config_file_name, subfolder, token, cache_folder, revision,
            local_files_only,
        )  # fmt: skip
        if path is None:
            return {}
        config = layout.read_json(Path(path))
        if not isinstance(config, dict):
            raise ModelFolderError(f"{path}: expected a JSON object")
        for old, new in cls.config_key_renames.items():
            if old in config and new not in config:
                config[new] = config.pop(old)
        return config

    load_file_path = staticmethod(load_file_path)
    load_dir_path = staticmethod(load_dir_path)

    @classmethod
    def load_torch_weights(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        model: torch.nn.Module | None = None,
    ) -> Any:
        """model.safetensors, else pytorch_model.bin (weights only); loaded into `model` (strict) or returned."""
        hub = (subfolder, token, cache_folder, revision, local_files_only)
        safetensors_path = load_file_path(model_name_or_path, layout.SAFETENSORS_WEIGHTS, *hub)
        pickled_path = load_file_path(model_name_or_path, layout.PICKLED_WEIGHTS, *hub)
        if safetensors_path is not None:
            state = base.load_safetensors_weights(Path(safetensors_path))
        elif pickled_path is not None:
            state = base.load_pickled_weights(Path(pickled_path))
        else:
            where = Path(model_name_or_path) / subfolder
            raise ModelFolderError(f"{where}: no {layout.SAFETENSORS_WEIGHTS} or {layout.PICKLED_WEIGHTS}")
        if model is None:
            return state
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            last = str(e).strip().splitlines()[-1].strip()
            raise ModelFolderError(f"{Path(model_name_or_path) / subfolder}: weights do not fit: {last}") from None
        return model

    def save_config(self, output_path: str, filename: str | None = None) -> None:
        path = Path(output_path) / (filename or self.config_file_name)
        path.write_text(json.dumps(self.get_config_dict(), indent=4), encoding="utf-8")  # type: ignore[attr-defined]

    def save_torch_weights(self, output_path: str, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_model

        if safe_serialization:
            save_model(self, str(Path(output_path) / layout.SAFETENSORS_WEIGHTS))  # type: ignore[arg-type]
        else:
            torch.save(self.state_dict(), Path(output_path) / layout.PICKLED_WEIGHTS)  # type: ignore[attr-defined]

    def on_model_ready(self, model: Any) -> None:
        """ST's hook after the model is built; st does not call it (its model is not ST's)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config_dict()})"  # type: ignore[attr-defined]


def _user_defines(obj: object, name: str) -> bool:
    """True when a class written by the user (before any stand-in class in the MRO) defines `name`."""
    for cls in type(obj).__mro__:
        if cls.__module__ == __name__:
            return False
        if name in vars(cls):
            return True
    return False


class Module(SentenceTransformersApi, base.Module):
    """ST's `Module`: `load` builds the class from its config file alone (weights are the subclass's job)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def forward(self, features: Features, **kwargs: Any) -> Features:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """ST leaves save abstract; st's default writes the config keys and any weights, as a subclass would."""
        self.save_config(output_path)
        if any(True for _ in self.parameters()):
            self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        init_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        config = cls.load_config(model_name_or_path, subfolder, None, token, cache_folder, revision, local_files_only)
        for key, value in (init_defaults or {}).items():
            config.setdefault(key, value)
        return cls(**config)

    def get_sentence_embedding_dimension(self) -> int | None:
        """ST 6 renamed it get_embedding_dimension; a subclass may define either."""
        return self.get_embedding_dimension() if _user_defines(self, "get_embedding_dimension") else None

    def get_embedding_dimension(self) -> int | None:
        return (
            self.get_sentence_embedding_dimension() if _user_defines(self, "get_sentence_embedding_dimension") else None
        )


class InputModule(Module, base.InputModule):
    """ST's `InputModule`: `preprocess(inputs, prompt)` (ST >= 5.4) or `tokenize(texts)` (older), either one."""

    save_in_root: ClassVar[bool] = True

    @property
    def modalities(self) -> list[str]:
        return ["text"]

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        if not _user_defines(self, "preprocess"):
            raise NotImplementedError(f"{type(self).__name__} must implement preprocess() or tokenize()")
        return self.preprocess(texts, **kwargs)

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> Features:
        if not _user_defines(self, "tokenize"):
            raise NotImplementedError(f"{type(self).__name__} must implement preprocess() or tokenize()")
        return self.tokenize([prompt + text for text in inputs] if prompt else list(inputs), **kwargs)

    def get_max_seq_length(self) -> int | None:
        value = getattr(self, "max_seq_length", None)
        return value if isinstance(value, int) else None

    def save_tokenizer(self, output_path: str, **kwargs: Any) -> None:
        tokenizer: Any = getattr(self, "tokenizer", None)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(output_path, **kwargs)
        elif tokenizer is not None:
            tokenizer.save(output_path, **kwargs)


# Transformer options that only name where or how transformers finds the model: nothing st computes differs.
_HARMLESS_MODEL_KWARGS = frozenset({"trust_remote_code", "revision", "cache_dir", "token", "local_files_only"})


class Transformer(SentenceTransformersApi, st_transformer.Transformer):
    """ST's `Transformer`, as both its constructor generations spell it, on st's own Transformer.

    The tokenizer, config and model kwargs go to transformers as ST passes them (either spelling);
    options that would change what st computes and that st does not implement (another backend or
    task, a separate tokenizer) are refused in one line rather than ignored.
    """

    config_file_name: ClassVar[str] = layout.SBERT_CONFIG

    def __init__(
        self,
        model_name_or_path: str,
        max_seq_length: int | None = None,
        model_args: dict[str, Any] | None = None,
        tokenizer_args: dict[str, Any] | None = None,
        config_args: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        do_lower_case: bool = False,
        tokenizer_name_or_path: str | None = None,
        backend: str = "torch",
        *,
        transformer_task: str = "feature-extraction",
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        module_output_name: str | None = None,
        **ignored: Any,  # modality_config, processing_kwargs, ...: the text defaults are what st runs
    ) -> None:
        where = f"{type(self).__name__}({model_name_or_path!r})"
        refused = {
            "backend": backend != "torch",
            "transformer_task": transformer_task != "feature-extraction",
            "module_output_name": module_output_name not in (None, "token_embeddings"),
            "tokenizer_name_or_path": tokenizer_name_or_path not in (None, model_name_or_path),
        }
        for key, is_refused in refused.items():
            if is_refused:
                raise StError(f"{where}: st does not support {key}={locals()[key]!r}")
        model_options = {**(model_args or {}), **(model_kwargs or {})}
        super().__init__(
            model_name_or_path,
            max_seq_length=max_seq_length,
            do_lower_case=do_lower_case,
            revision=model_options.get("revision"),
            tokenizer_args=_without_harmless({**(tokenizer_args or {}), **(processor_kwargs or {})}),
            config_args=_without_harmless({**(config_args or {}), **(config_kwargs or {})}),
            model_args=_without_harmless(model_options),
        )

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Any:
        folder = base.local_folder(model_name_or_path, subfolder, **kwargs)
        return cls(str(folder), **layout.read_module_config(SPECS["Transformer"], folder))

    @property
    def model(self) -> Any:
        """ST >= 5.4 calls the transformers model `model` (`auto_model` stays as an alias)."""
        return self.auto_model

    @property
    def config(self) -> Any:
        return self.auto_model.config

    @property
    def modalities(self) -> list[str]:
        return ["text"]

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> Features:
        return self.tokenize([prompt + text for text in inputs] if prompt else list(inputs))

    def get_embedding_dimension(self) -> int:
        return self.get_word_embedding_dimension()

    def save_tokenizer(self, output_path: str, **kwargs: Any) -> None:
        self.tokenizer.save_pretrained(output_path, **kwargs)


# ---------------------------------------------------------------- util: what custom code commonly calls


def cos_sim(a: Tensor, b: Tensor) -> Tensor:
    return normalize_embeddings(_2d(a)) @ normalize_embeddings(_2d(b)).T


def dot_score(a: Tensor, b: Tensor) -> Tensor:
    return _2d(a) @ _2d(b).T


def normalize_embeddings(embeddings: Tensor) -> Tensor:
    return torch.nn.functional.normalize(embeddings, p=2, dim=1)


def _2d(x: Any) -> Tensor:
    tensor = x if isinstance(x, Tensor) else torch.as_tensor(x)
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def fullname(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------- the stand-in package

def _without_harmless(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _HARMLESS_MODEL_KWARGS}


_CLASSES = {"Module": Module, "InputModule": InputModule, "Transformer": Transformer}
_UTIL = {
    "load_file_path": load_file_path,
    "load_dir_path": load_dir_path,
    "cos_sim": cos_sim,
    "pytorch_cos_sim": cos_sim,
    "dot_score": dot_score,
    "normalize_embeddings": normalize_embeddings,
    "fullname": fullname,
}
# Every module path those names have had, ST 2.2 → 6.2 (a package's attribute wins over a same-named submodule).
_PATHS: dict[str, dict[str, Any]] = {
    ROOT: {},
    f"{ROOT}.models": _CLASSES,
    f"{ROOT}.models.Module": {"Module": Module},
    f"{ROOT}.models.InputModule": {"InputModule": InputModule},
    f"{ROOT}.models.Transformer": {"Transformer": Transformer},
    f"{ROOT}.base": {},
    f"{ROOT}.base.modules": _CLASSES,
    f"{ROOT}.base.modules.module": {"Module": Module},
    f"{ROOT}.base.modules.input_module": {"InputModule": InputModule},
    f"{ROOT}.base.modules.transformer": {"Transformer": Transformer},
    f"{ROOT}.sentence_transformer": {},
    f"{ROOT}.sentence_transformer.modules": _CLASSES,
    f"{ROOT}.util": _UTIL,
    f"{ROOT}.util.file_io": {"load_file_path": load_file_path, "load_dir_path": load_dir_path},
    f"{ROOT}.util.similarity": {k: _UTIL[k] for k in ("cos_sim", "pytorch_cos_sim", "dot_score")},
}


def supplied_names() -> str:
    return ", ".join(sorted({*_CLASSES, *_UTIL}))


def _stand_in_modules() -> dict[str, ModuleType]:
    modules = {}
    for path, names in _PATHS.items():
        module = ModuleType(path, f"st's stand-in for {path} (st_cli/st_compat.py)")
        module.__spec__ = importlib.machinery.ModuleSpec(path, None, is_package=True)
        module.__path__ = []  # a package with no files: any other submodule is "No module named ..."
        module.__dict__.update(names)
        modules[path] = module
    for path, module in modules.items():  # parents expose their sub-packages, unless a class has the name
        parent, _, child = path.rpartition(".")
        if parent in modules and child not in vars(modules[parent]):
            setattr(modules[parent], child, module)
    return modules


def _is_ours(name: str) -> bool:
    return name == ROOT or name.startswith(ROOT + ".")


@contextlib.contextmanager
def supplied() -> Iterator[None]:
    """`sentence_transformers` is st's stand-in inside the block; what was in sys.modules before comes back."""
    import transformers  # noqa: F401 - imported outside the block: it probes for sentence_transformers itself

    saved = {name: module for name, module in sys.modules.items() if _is_ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_stand_in_modules())
    finder = _NothingElse()
    sys.meta_path.insert(0, finder)  # ahead of real ST's own finder, which redirects its deprecated paths
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if _is_ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


class _NothingElse(importlib.abc.MetaPathFinder):
    """Any sentence_transformers path the stand-in lacks is "No module named ...", never a real file."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if _is_ours(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


# ---------------------------------------------------------------- plain torch modules (the ST <= 5.3 contract)


class PlainModule(base.Module):
    """A plain torch.nn.Module custom module, run and saved through its own methods (`wrapped` is its class)."""

    wrapped: ClassVar[Any]  # the user's class

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, features: Features, **kwargs: Any) -> Features:
        return self.inner(features, **kwargs)  # type: ignore[no-any-return]

    def get_config_dict(self) -> dict[str, Any]:
        method = getattr(self.inner, "get_config_dict", None)
        return method() if callable(method) else {}

    def get_sentence_embedding_dimension(self) -> int | None:
        method = getattr(self.inner, "get_sentence_embedding_dimension", None)
        return method() if callable(method) else None

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.inner.save(output_path)  # type: ignore[operator]

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> PlainModule:
        inner = cls.wrapped.load(str(base.local_folder(model_name_or_path, subfolder, **kwargs)))
        if not isinstance(inner, torch.nn.Module):
            raise StError(f"{cls.wrapped.__name__}.load() returned a {type(inner).__name__}, not a torch module")
        return cls(inner)


class PlainInputModule(PlainModule, base.InputModule):
    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        return dict(self.inner.tokenize(texts))  # type: ignore[operator]

    def get_max_seq_length(self) -> int | None:
        method = getattr(self.inner, "get_max_seq_length", None)
        value = method() if callable(method) else getattr(self.inner, "max_seq_length", None)
        return value if isinstance(value, int) else None


def adapt(cls: Any) -> Any:
    """st's class for a custom class: itself when it is an st module, a wrapper for a plain one with load()."""
    plain = isinstance(cls, type) and issubclass(cls, torch.nn.Module) and not issubclass(cls, base.Module)
    if not plain or not callable(getattr(cls, "load", None)):
        return cls  # an st module, or something check_contract refuses with its own message
    adapter = PlainInputModule if callable(getattr(cls, "tokenize", None)) else PlainModule
    namespace = {
        "wrapped": cls,
        "__module__": cls.__module__,  # so the source file found (and saved along) is the user's
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "forward_kwargs": set(getattr(cls, "forward_kwargs", ())),
        # ST <= 5.3 saved a first module in the root only when it had this attribute (as its Transformer did).
        "save_in_root": bool(getattr(cls, "save_in_root", False)),
    }
    return type(cls.__name__, (adapter,), namespace)


def load_module(cls: type[base.Module], root: Path, subfolder: str) -> base.Module:
    """Build a custom module from its folder the way sentence-transformers 6.2 calls its `load`.

    A `load` with one parameter (older modules) gets the module's local folder; an ST-style class
    gets ST's keyword arguments; an st module gets st's.
    """
    if len(inspect.signature(cls.load).parameters) == 1:
        return cls.load(str(_inside(root, subfolder)))  # type: ignore[call-arg]
    if issubclass(cls, SentenceTransformersApi):
        st_kwargs = {"token": None, "cache_folder": None, "revision": None, "local_files_only": False}
        module_kwargs = {"trust_remote_code": True, "model_kwargs": None, "processor_kwargs": None}
        extra = {"config_kwargs": None, "backend": "torch"}
        return cls.load(str(root), subfolder=subfolder, **st_kwargs, **module_kwargs, **extra)
    return cls.load(str(root), subfolder=subfolder)
