"""Custom module code: find the class a recipe names, check it keeps the module contract, carry its
source file into the model folder, and import a folder's code only when the user trusts it.

Recipes name a custom module as `path/to/file.py:Class` (relative to the recipe) or
`package.module:Class`; that is the user's own code, so it is imported while the recipe is checked.
A saved folder records it as `file.Class` with `file.py` at the folder root, as sentence-transformers
does; importing that (or `org/repo--file.Class` from the Hub) needs `trust_remote_code`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from st_cli.errors import ConfigValueError, ModelFolderError, StError, TrustError, first_line

if TYPE_CHECKING:
    from st_cli.model.modules.base import Module

# Constructor parameters that take the incoming width (first match wins) and give the outgoing one.
IN_DIM_KEYS = ("in_features", "input_dim", "in_dim", "dimension", "embedding_dimension", "word_embedding_dimension")
OUT_DIM_KEYS = ("out_features", "output_dim", "out_dim")
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", re.MULTILINE)
_CONTRACT_HINT = "subclass st_cli.Module (or st_cli.InputModule for a first module)"
INPUT_HINT = "subclass st_cli.InputModule, or st_cli.model.modules.transformer.Transformer"


def is_ref(type_name: str) -> bool:
    """True for a recipe `type` that names custom code (`file.py:Class`, `package.module:Class`)."""
    return ":" in type_name


# ---------------------------------------------------------------- recipe side


def class_from_ref(ref: str, base: Path) -> type[Module]:
    """The class a recipe names, imported and checked; raises a one-line StError."""
    where, _, class_name = ref.rpartition(":")
    if not where or not class_name.isidentifier():
        raise StError(f"expected path/to/file.py:ClassName or package.module:ClassName, got {ref!r}")
    if where.endswith(".py") or "/" in where or "\\" in where:
        source = Path(where).expanduser()
        source = source if source.is_absolute() else base / source
        if not source.is_file():
            raise StError(f"no such file {where!r} (looked for {source})")
        module = _import_recipe_file(source)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # noqa: BLE001 - any failure while importing user code is a user error
            raise StError(f"cannot import {where!r}: {first_line(e)}") from None
    cls = _class_in(module, class_name, where)
    check_contract(cls, ref)
    check_portable_source(cls)
    return cls


def _import_recipe_file(source: Path) -> ModuleType:
    """A recipe's own file; one written for sentence-transformers gets st's stand-in for it, as a folder's does."""
    if "sentence_transformers" not in source.read_text(encoding="utf-8", errors="replace"):
        return import_file(source)
    from st_cli.model import st_compat

    with st_compat.supplied():
        return import_file(source)


def plan(cls: type[Module], kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
    """Dimension inference for a custom module: its own `plan` if it has one, else by parameter names.

    Without a `plan`, the first constructor parameter named like an input width (`in_features`,
    `input_dim`, `dimension`, ...) is filled from the module before, and must agree with it; an
    output-width parameter (`out_features`, `output_dim`, `out_dim`) gives the width after it;
    otherwise the width passes through unchanged.
    """
    from st_cli.model.modules.base import Module

    if getattr(cls.plan, "__func__", None) is not Module.plan.__func__:  # type: ignore[attr-defined]
        try:
            return cls.plan(kwargs, input_dim)
        except ConfigValueError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in user code is the user's to fix, on one line
            problem = f"{cls.__name__}.plan() failed: {type(e).__name__}: {first_line(e)}"
            raise ConfigValueError(None, problem) from None
    params = inspect.signature(cls.__init__).parameters
    kwargs, output = dict(kwargs), input_dim
    in_key = next((k for k in IN_DIM_KEYS if k in params), None)
    if in_key is not None:
        value = kwargs.get(in_key, input_dim)
        if input_dim is not None and value != input_dim:
            raise ConfigValueError(in_key, f"is {value} but the module before gives {input_dim}")
        if value is not None:
            kwargs[in_key] = output = value
    out_key = next((k for k in OUT_DIM_KEYS if k in params), None)
    if out_key is not None:
        value = kwargs.get(out_key, params[out_key].default)
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise ConfigValueError(out_key, f"must be a positive integer, got {value}")
            output = value
    return kwargs, output


def untrained_at_build(module: Module) -> bool:
    """A freshly built custom module with parameters is untrained, unless its __init__ says otherwise.

    A subclass of a built-in keeps the built-in's rule (a Transformer subclass loads trained
    weights; a Dense subclass starts random).
    """
    from st_cli.model import registry

    if "untrained" in vars(module):
        return bool(module.untrained)
    if any(registry.is_registered(base) for base in type(module).__mro__[1:]):
        return bool(module.untrained)
    return any(True for _ in module.parameters())


# ---------------------------------------------------------------- contract


def check_contract(cls: Any, label: str) -> None:
    """Refuse what st could not run or save: not a class, not an st Module, no forward, bad config_keys."""
    import torch

    from st_cli.model.modules.base import Module

    if not isinstance(cls, type):
        raise StError(f"{label} is not a class (it is a {type(cls).__name__} object)")
    if not issubclass(cls, torch.nn.Module):
        raise StError(f"{label} is not a torch.nn.Module; {_CONTRACT_HINT}")
    if not issubclass(cls, Module):
        raise StError(f"{label} is a plain torch.nn.Module without st's save/load contract; {_CONTRACT_HINT}")
    if cls.forward is Module.forward:
        raise StError(f"{label} does not define forward(self, features, **kwargs)")
    if "." in cls.__qualname__:
        raise StError(f"{label} must be defined at the top level of its file")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    missing = [key for key in cls.config_keys if key not in params and not takes_any]
    if missing:
        raise StError(f"{label}: config_keys names {missing[0]!r}, which __init__ does not take")


def is_input_module(cls: type) -> bool:
    from st_cli.model.modules.base import InputModule

    return issubclass(cls, InputModule)


def check_forward_kwargs(cls: type[Module], names: tuple[str, ...]) -> str | None:
    """The first declared encode-time kwarg that `cls.forward` cannot take, or None."""
    params = inspect.signature(cls.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return next((name for name in names if name not in params), None)


def check_portable_source(cls: type) -> None:
    """The source file must be able to travel alone: an importable name and no relative imports."""
    source = source_file(cls)
    if not source.stem.isidentifier():
        raise StError(f"{source}: the file name must be a Python identifier (it becomes the module name)")
    if _RELATIVE_IMPORT.search(source.read_text(encoding="utf-8")):
        raise StError(f"{source}: relative imports cannot travel with the model folder; make the file self-contained")


# ---------------------------------------------------------------- saving


def source_file(cls: type) -> Path:
    path = inspect.getsourcefile(cls)
    if path is None:
        raise StError(f"{cls.__qualname__}: cannot find its source file")
    return Path(path)


def type_string(cls: type) -> str:
    """`file.Class`, the modules.json `type` sentence-transformers writes for code at the folder root."""
    return f"{source_file(cls).stem}.{cls.__name__}"


def copy_source(cls: type, root: Path) -> None:
    """Put the class's source file at the folder root; refuse two different files with one name."""
    source = source_file(cls)
    target = root / source.name
    if target.exists():
        if target.read_bytes() != source.read_bytes():
            raise StError(f"{source}: another module's source is already saved as {source.name}; rename one file")
        return
    shutil.copyfile(source, target)


# ---------------------------------------------------------------- loading a folder


def load_folder_class(type_string: str, root: Path, *, trust_remote_code: bool) -> type[Module]:
    """The class for a modules.json `file.Class` or `org/repo--file.Class`; imports only with trust."""
    from st_cli.format import layout

    repo_id, hub, ref = type_string.rpartition("--")
    module_name, _, class_name = ref.rpartition(".")
    modules_json = root / layout.MODULES_JSON
    # Identifiers only: `../x.Class` would name code outside the folder (DESIGN §7).
    if not class_name.isidentifier() or not all(part.isidentifier() for part in module_name.split(".")):
        raise ModelFolderError(f"{modules_json}: type {type_string!r} is neither a known module nor file.Class")
    where = f"{module_name}.py in Hub repo {repo_id}" if hub else str(root / f"{module_name}.py")
    if not hub and not (root / f"{module_name}.py").is_file() and not trust_remote_code:
        # Likely a plugin type whose package is not installed here: asking for trust would mislead.
        raise ModelFolderError(
            f"{modules_json}: module type {type_string!r} is not built in, no installed plugin registers it, "
            f"and the folder has no {module_name}.py; install the package that provides it "
            "(or, if it is installed code you trust, re-run with --trust-remote-code)"
        )
    if not trust_remote_code:
        raise TrustError(
            f"{modules_json}: module {type_string!r} is custom code (class {class_name} in {where}); "
            "re-run with --trust-remote-code (Python: trust_remote_code=True) if you trust it"
        )
    source = _hub_file(repo_id, f"{module_name}.py", modules_json) if hub else root / f"{module_name}.py"
    from st_cli.model import st_compat

    with st_compat.supplied():  # what a file written for sentence-transformers imports from it
        if source.is_file():
            module = import_file(source)
        else:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001 - not in the folder and not importable: one message
                problem = f"custom module {type_string!r}: no {source.name} in the folder, and not importable"
                raise ModelFolderError(f"{modules_json}: {problem}") from None
    cls = st_compat.adapt(_class_in(module, class_name, str(source)))  # plain torch modules (ST <= 5.3) get a wrapper
    check_contract(cls, type_string)
    return cls


def load_module(cls: type[Module], root: Path, subfolder: str) -> Module:
    """A custom module built from its folder, called the way its kind expects (st, ST >= 5, ST <= 5.3)."""
    from st_cli.model import st_compat

    return st_compat.load_module(cls, root, subfolder)


def save_module(module: Module, folder: Path, fmt: str) -> None:
    """`module.save(folder)`, telling it the format only when its save() can take the keyword."""
    params = inspect.signature(module.save).parameters
    takes_format = "format" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if takes_format:
        module.save(str(folder), format=fmt)  # type: ignore[arg-type]
    else:
        module.save(str(folder))


def _hub_file(repo_id: str, filename: str, modules_json: Path) -> Path:
    from st_cli.format import hub

    try:
        return hub.hub_file(repo_id, filename)
    except ModelFolderError as e:
        raise ModelFolderError(f"{modules_json}: {e}") from None


# ---------------------------------------------------------------- importing


def import_file(path: Path) -> ModuleType:
    """Import a .py file under a name unique to its path and content (so edits and copies never clash)."""
    path = path.resolve()
    data = path.read_bytes()
    digest = hashlib.sha256(str(path).encode() + b"\0" + data).hexdigest()[:12]
    name = f"_st_custom_{digest}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and typing look the module up by name
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in a model folder
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - an error in user code is reported, not raised as ours
        del sys.modules[name]
        problem = f"{type(e).__name__}: {first_line(e)}"
        if isinstance(e, ImportError) and "sentence_transformers" in str(e):
            from st_cli.model import st_compat

            problem += f" (st supplies from sentence_transformers only: {st_compat.supplied_names()})"
        raise StError(f"{path}: importing it failed: {problem}") from None
    finally:
        sys.dont_write_bytecode = no_bytecode
    return module


def _class_in(module: ModuleType, class_name: str, where: str) -> Any:
    if not hasattr(module, class_name):
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        hint = f" (it defines: {', '.join(classes)})" if classes else ""
        raise StError(f"{where} has no class {class_name!r}{hint}")
    return getattr(module, class_name)
