"""Recipes: the YAML that lists a model's module stack. Strict, with errors that point at a line.

Every error reads `recipe.yaml:LINE: key.path: what is wrong`. Module kwargs are checked against
the module class's constructor and dimensions are inferred down the stack, all before any
weights load.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import functools
import inspect
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from st_cli.errors import ConfigValueError, RecipeError, StError
from st_cli.format.spec import TypeSpec
from st_cli.model import custom, registry

TOP_LEVEL_KEYS = ("name", "seed", "base", "keep", "modules", "prompts", "default_prompt", "similarity", "truncate_dim")
SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
# Bounds on what a recipe may ask for, so a typo is a located error and not an allocation crash.
MAX_WIDTH = 1 << 20
_BYTES_PER_PARAMETER = 4  # float32
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SET_PATH = re.compile(r"^[A-Za-z_][\w]*(\[\d+\])?(\.[A-Za-z_]\w*(\[\d+\])?)*$")

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ModuleSpec:
    type: str  # registry name, e.g. "Pooling"
    kwargs: Mapping[str, Any]  # constructor kwargs, dimensions filled in
    line: int | None  # 1-based line in the recipe, for later errors
    output_dim: int | None = None
    forward_kwargs: tuple[str, ...] = ()  # encode-time kwargs passed to this module (modules.json "kwargs")
    module_class: builtins.type | None = field(default=None, compare=False, repr=False)  # for custom code refs


@dataclass(frozen=True)
class Recipe:
    source: Path
    name: str
    modules: tuple[ModuleSpec, ...]
    seed: int = 0
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt: str | None = None
    similarity: str = "cosine"
    truncate_dim: int | None = None
    base: str | None = None  # a model folder or Hub id whose first `keep` modules start the stack
    keep: int | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # top-level key -> its line

    def check_format(self, fmt: str) -> None:
        """What the recipe asks for that a folder format cannot hold; checked before any weights load."""
        if fmt == "portable" and self.truncate_dim:
            problem = (
                "sentence-transformers < 5.4 ignore it, so it cannot be portable; "
                "use --format st6, or shrink the last Dense's out_features instead"
            )
            raise self.error("truncate_dim", problem, self.lines.get("truncate_dim"))

    def input_paths(self) -> list[Path]:
        """Local files and folders a build reads: the recipe, its base, custom module files, and module
        arguments naming a path (a Transformer's `model`), so the output can be refused if it holds one."""
        named = [self.base] if self.base else []
        named += [v for spec in self.modules for v in spec.kwargs.values() if isinstance(v, str) and v]
        paths = [self.source]
        for value in named:
            paths += [p for p in (Path(value), self.source.parent / value) if os.path.lexists(p)]
        for spec in self.modules:
            with contextlib.suppress(TypeError, OSError):
                source = inspect.getsourcefile(spec.module_class) if spec.module_class else None
                paths += [Path(source)] if source else []
        return paths

    def error(self, where: str, problem: str, line: int | None = None) -> RecipeError:
        return RecipeError(self.source, line, where, problem)

    def to_json(self) -> dict[str, Any]:
        """The resolved recipe, as recorded in st_manifest.json."""
        return {
            "name": self.name,
            "seed": self.seed,
            "modules": [
                {"type": m.type, **m.kwargs, **({"kwargs": list(m.forward_kwargs)} if m.forward_kwargs else {})}
                for m in self.modules
            ],
            "prompts": dict(self.prompts),
            "default_prompt": self.default_prompt,
            "similarity": self.similarity,
            "truncate_dim": self.truncate_dim,
            "base": self.base,
            "keep": self.keep,
        }


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Parse, expand, override and check a recipe file; raises RecipeError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(path, None, "", "recipe file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(path, None, "", f"cannot read recipe: {e}") from None
    data, lines = _parse_yaml(path, text)
    for override in overrides:
        _apply_override(path, data, lines, override)
    return _check_recipe(path, data, lines)


# ---------------------------------------------------------------- YAML with line numbers


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(path, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}") from None
    except RecursionError:
        raise RecipeError(path, None, "", "invalid YAML: nested too deeply") from None
    if node is None:
        raise RecipeError(path, None, "", "the recipe is empty")
    lines: dict[KeyPath, int] = {}
    return _to_python(path, node, (), lines, [_MAX_NODES]), lines


# A recipe is a few dozen values; YAML aliases can make a few lines expand to billions ("billion laughs").
_MAX_NODES = 100_000
_MAX_DEPTH = 64


def _to_python(path: Path, node: yaml.Node, key_path: KeyPath, lines: dict[KeyPath, int], budget: list[int]) -> Any:
    lines.setdefault(key_path, node.start_mark.line + 1)
    budget[0] -= 1
    if budget[0] < 0 or len(key_path) > _MAX_DEPTH:
        problem = f"more than {_MAX_NODES} values or {_MAX_DEPTH} levels (YAML aliases that expand without end?)"
        where = _where(key_path[:6]) + ("…" if len(key_path) > 6 else "")
        raise RecipeError(path, node.start_mark.line + 1, where, problem)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError(path, key_node.start_mark.line + 1, _where(key_path), "a key must be a plain name")
            key = key_node.value
            if key in out:
                raise RecipeError(path, key_node.start_mark.line + 1, _where(key_path + (key,)), "duplicate key")
            lines[key_path + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(path, value_node, key_path + (key,), lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(path, item, key_path + (i,), lines, budget) for i, item in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, str):
        value = _expand_env(path, value, lines[key_path], key_path)
    return value


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _expand_env(path: Path, value: str, line: int, key_path: KeyPath) -> str:
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise RecipeError(path, line, _where(key_path), f"environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _ENV_VAR.sub(lookup, value)


def _where(key_path: KeyPath) -> str:
    out = ""
    for part in key_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# ---------------------------------------------------------------- --set overrides


def _apply_override(path: Path, data: Any, lines: dict[KeyPath, int], override: str) -> None:
    """`modules[2].out_features=128`: the value is parsed as YAML."""
    key, sep, raw_value = override.partition("=")
    if not sep or not _SET_PATH.match(key.strip()):
        raise RecipeError(path, None, f"--set {override}", "expected key.path=value, e.g. modules[2].out_features=128")
    key_path = _parse_key_path(key.strip())
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    target = data
    for depth, part in enumerate(key_path[:-1]):
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            raise RecipeError(
                path, None, f"--set {override}", f"{_where(key_path[: depth + 1])} does not exist"
            ) from None
    last = key_path[-1]
    if isinstance(target, list):
        if not (isinstance(last, int) and last < len(target)):
            raise RecipeError(path, None, f"--set {override}", f"{_where(key_path)} does not exist")
        target[last] = value
    elif isinstance(target, dict) and isinstance(last, str):
        target[last] = value
    else:
        raise RecipeError(path, None, f"--set {override}", f"{_where(key_path[:-1])} has no {_where((last,))!r}")


def _parse_key_path(key: str) -> KeyPath:
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", key):
        parts.append(int(index) if index else name)
    return tuple(parts)


# ---------------------------------------------------------------- schema


def _check_recipe(path: Path, data: Any, lines: dict[KeyPath, int]) -> Recipe:
    def fail(key_path: KeyPath, problem: str) -> RecipeError:
        line = lines.get(key_path) or lines.get(key_path[:-1]) or lines.get(key_path[:1])
        return RecipeError(path, line, _where(key_path), problem)

    if not isinstance(data, dict):
        raise RecipeError(path, lines.get(()), "", "expected a mapping with a 'modules' list at the top")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise fail((key,), _unknown_key_message(key, TOP_LEVEL_KEYS))
    base, keep, dim, inherited = _check_base(data, path, fail)
    data = inherited | data  # the recipe's own prompts/similarity win over the base's
    modules = data.get("modules", [] if base else None)
    if not isinstance(modules, list) or not (modules or base):
        raise fail(("modules",), "required: a non-empty list of modules")

    seed = _typed(data.get("seed", 0), int, ("seed",), fail)
    if not -(2**63) <= seed < 2**64:  # what torch.manual_seed accepts
        raise fail(("seed",), f"must fit in 64 bits, got {seed}")
    name = _typed(data.get("name", path.stem), str, ("name",), fail)
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise fail(("prompts",), "expected a mapping of prompt names to strings")
    prompts = {str(k): v for k, v in prompts.items()}
    default_prompt = data.get("default_prompt")
    default_prompt = None if default_prompt is None else str(default_prompt)  # YAML may read a name as a number
    if default_prompt is not None and default_prompt not in prompts:
        raise fail(
            ("default_prompt",), f"{default_prompt!r} is not one of the prompts ({', '.join(prompts) or 'none'})"
        )
    similarity = data.get("similarity", "cosine")
    if similarity not in SIMILARITIES:
        raise fail(("similarity",), f"must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    truncate_dim = data.get("truncate_dim")
    if truncate_dim is not None and (
        not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or truncate_dim <= 0
    ):
        raise fail(("truncate_dim",), f"must be a positive integer, got {truncate_dim!r}")

    specs: list[ModuleSpec] = []
    for i, module in enumerate(modules):
        line, first = lines.get(("modules", i)), i == 0 and base is None
        spec = _check_module(module, ("modules", i), dim, fail, base=path.parent, line=line, first=first)
        if not first and _is_input_module(spec):
            where = "the base model's" if base is not None else "modules[0]"
            problem = f"{spec.type} is an input module (it tokenizes); a stack has one, first, and {where} is it"
            raise fail(("modules", i, "type"), problem)
        _check_size(spec, dim, ("modules", i), fail)
        if base is None and _reads_missing_sentence_embedding(spec, specs):
            raise fail(("modules", i, "type"), f"{spec.type} works on the sentence embedding: put a Pooling before it")
        specs.append(spec)
        dim = spec.output_dim
    if base is None and _gives_no_sentence_embedding(specs):
        problem = "nothing in the stack gives a sentence embedding (only token embeddings): add a Pooling"
        raise fail(("modules",), problem)
    if truncate_dim is not None and dim is not None and truncate_dim > dim:
        raise fail(("truncate_dim",), f"{truncate_dim} is larger than the embedding dimension {dim}")
    return Recipe(
        source=path,
        name=name,
        modules=tuple(specs),
        seed=seed,
        prompts=prompts,
        default_prompt=default_prompt,
        similarity=similarity,
        truncate_dim=truncate_dim,
        base=base,
        keep=keep,
        lines={str(k[0]): line for k, line in lines.items() if len(k) == 1},
    )


def _gives_no_sentence_embedding(specs: list[ModuleSpec]) -> bool:
    """Registered types only (custom code may write anything), none of which writes the sentence embedding."""
    if any(s.module_class is not None for s in specs):
        return False
    return all(registry.spec(s.type).writes != "sentence_embedding" for s in specs)


def _is_input_module(spec: ModuleSpec) -> bool:
    return custom.is_input_module(spec.module_class or registry.get(spec.type))


def _check_size(spec: ModuleSpec, input_dim: int | None, key_path: KeyPath, fail: Any) -> None:
    """A width no model has, or a weight matrix that would not fit in this machine's memory."""
    out = spec.output_dim
    if out is None:
        return
    key = next((k for k, v in spec.kwargs.items() if v == out and not isinstance(v, bool)), None)
    if out > MAX_WIDTH:
        raise fail(key_path + ((key,) if key else ()), f"{out} is wider than st allows ({MAX_WIDTH})")
    matrix = None if spec.module_class is not None else registry.spec(spec.type).weight_matrix
    if matrix is None:
        return
    rows, cols = matrix
    n_in, n_out = spec.kwargs.get(rows), spec.kwargs.get(cols)
    if isinstance(n_in, int) and isinstance(n_out, int):
        needed, memory = n_in * n_out * _BYTES_PER_PARAMETER, _physical_memory()
        if memory is not None and needed > memory // 2:
            problem = f"{n_in}×{n_out} weights need {needed / 2**30:.1f} GiB, more than half this machine's memory"
            raise fail(key_path + (cols,), problem)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _type_spec(type_name: str) -> TypeSpec:
    return registry.spec(type_name)


def _reads_missing_sentence_embedding(spec: ModuleSpec, before: list[ModuleSpec]) -> bool:
    """A registered type that reads the sentence embedding, with nothing before it that writes one."""
    if spec.module_class is not None or (not before and registry.spec(spec.type).routes_text):
        return False  # a Router first takes the text to its routes' own input modules
    writers = [registry.spec(s.type).writes for s in before if s.module_class is None]
    if len(writers) < len(before):  # custom code before it may write anything
        return False
    return registry.spec(spec.type).reads == "sentence_embedding" and "sentence_embedding" not in writers


def _check_base(data: dict[str, Any], path: Path, fail: Any) -> tuple[str | None, int | None, int | None, dict]:
    """`base: FOLDER` (+ `keep: N`): start from the first N modules of an existing model.

    Read from its JSON and safetensors headers only; returns (base, keep, width after the kept
    modules, the base's prompt and similarity settings for the recipe to inherit).
    """
    if "base" not in data:
        if "keep" in data:
            raise fail(("keep",), "needs 'base': the model folder whose first modules to keep")
        return None, None, None, {}
    from st_cli.format.summary import summarize

    base = data["base"]
    if not isinstance(base, str) or not base:
        raise fail(("base",), "expected a model folder or a Hub id")
    if (path.parent / base).is_dir():
        base = str((path.parent / base).resolve())
    try:
        summary = summarize(base)
    except StError as e:
        raise fail(("base",), str(e)) from None
    problems = [f.message for f in summary.findings if f.severity == "error"]
    if problems:
        raise fail(("base",), f"{summary.path}: {problems[0]}")
    count = len(summary.modules)
    keep = data.get("keep", count)
    if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= count:
        raise fail(("keep",), f"must be between 1 and {count} (the modules of the base), got {keep!r}")
    inherited = {"prompts": summary.prompts, "default_prompt": summary.default_prompt, "similarity": summary.similarity}
    return base, keep, summary.modules[keep - 1].output_dim, {k: v for k, v in inherited.items() if v}


def _check_module(
    module: Any, key_path: KeyPath, input_dim: int | None, fail: Any, *, base: Path, line: int | None, first: bool
) -> ModuleSpec:
    if not isinstance(module, dict):
        raise fail(key_path, "expected a mapping with a 'type'")
    if "type" not in module:
        raise fail(key_path, "required key 'type' is missing")
    type_name = module["type"]
    if not isinstance(type_name, str):
        raise fail(key_path + ("type",), f"expected a string, got {type(type_name).__name__}")
    try:
        cls = custom.class_from_ref(type_name, base) if custom.is_ref(type_name) else registry.get(type_name)
    except StError as e:
        raise fail(key_path + ("type",), str(e)) from None
    is_custom = custom.is_ref(type_name)
    if is_custom and first and not custom.is_input_module(cls):
        raise fail(key_path + ("type",), f"{type_name} comes first, so it must tokenize: {custom.INPUT_HINT}")
    forward_kwargs = _check_forward_kwargs(cls, module.get("kwargs", []), key_path + ("kwargs",), fail, is_custom)
    kwargs = {k: v for k, v in module.items() if k not in ("type", "kwargs")}
    params = _init_params(cls)
    for key, value in kwargs.items():
        if key not in params:
            raise fail(key_path + (key,), _unknown_key_message(key, list(params), type_name))
        _check_type(value, params[key], key_path + (key,), fail)
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty and name not in kwargs]
    for key in _type_spec(type_name).path_keys if not is_custom else ():
        value = kwargs.get(key)
        if isinstance(value, str) and not value.startswith("package:") and (base / value).exists():
            kwargs[key] = str((base / value).resolve())
    planner = functools.partial(custom.plan, cls) if is_custom else cls.plan
    try:
        kwargs, output_dim = planner(dict(kwargs), input_dim)
    except ConfigValueError as e:
        raise fail(key_path + ((e.key,) if e.key else ()), e.problem) from None
    still_missing = [name for name in missing if name not in kwargs]
    if still_missing:
        raise fail(key_path, f"required key '{still_missing[0]}' is missing for {type_name}")
    return ModuleSpec(
        type=type_name,
        kwargs=kwargs,
        line=line,
        output_dim=output_dim,
        forward_kwargs=forward_kwargs,
        module_class=cls if is_custom else None,
    )


def _check_forward_kwargs(cls: type, names: Any, key_path: KeyPath, fail: Any, is_custom: bool) -> tuple[str, ...]:
    """A custom module's `kwargs: [task, ...]`: encode-time names its forward() must accept."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise fail(key_path, f"expected a list of keyword names, e.g. [task], got {names!r}")
    if names and not is_custom:
        # st's built-ins ignore them, and sentence-transformers' Dense and Normalize would fail on them.
        raise fail(key_path, f"{cls.__name__} takes no encode-time keywords; only custom modules declare kwargs")
    refused = custom.check_forward_kwargs(cls, tuple(names))
    if refused is not None:
        raise fail(key_path, f"{cls.__name__}.forward() does not accept {refused!r}; add it or **kwargs")
    return tuple(dict.fromkeys(names))


def _init_params(cls: type) -> dict[str, inspect.Parameter]:
    init = vars(cls).get("__init__") or next(vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k))
    signature = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - custom code may annotate with names it never defines
        hints = {}
    return {
        name: p.replace(annotation=hints.get(name, p.annotation))
        for name, p in signature.parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


# sentence-transformers' config spellings of recipe keys, so "did you mean" can bridge the two.
ST_KEY_NAMES = {
    "pooling_mode": "mode",
    "embedding_dimension": "dimension",
    "word_embedding_dimension": "dimension",
    "activation_function": "activation",
    "model_name_or_path": "model",
    "model_name": "model",  # ST <= 4's CLIPModel
}


def _unknown_key_message(key: str, allowed: Sequence[str], type_name: str | None = None) -> str:
    spellings = {name: name for name in allowed} | {st: ours for st, ours in ST_KEY_NAMES.items() if ours in allowed}
    close = difflib.get_close_matches(str(key), list(spellings), n=1)
    owner = f" for {type_name}" if type_name else ""
    hint = f" (did you mean {spellings[close[0]]!r}?)" if close else f"; allowed: {', '.join(allowed) or 'none'}"
    return f"unknown key {key!r}{owner}{hint}"


def _typed(value: Any, expected: type, key_path: KeyPath, fail: Any) -> Any:
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise fail(key_path, f"expected {_describe(expected)}, got {type(value).__name__} {value!r}")
    return value


def _check_type(value: Any, param: inspect.Parameter, key_path: KeyPath, fail: Any) -> None:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty or _matches(value, annotation):
        return
    raise fail(key_path, f"expected {_describe(annotation)}, got {type(value).__name__} {value!r}")


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, Sequence):
        args = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return {"int": "an integer", "str": "a string", "bool": "true or false", "float": "a number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")
