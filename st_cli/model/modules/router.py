"""Router (legacy spelling Asym): runs one of several module lists, chosen by the encode-time `task`.

Folders: `types` (sub-folder → type string), `structure` (route → sub-folders) and `parameters`, in
`router_config.json` (ST >= 5.0) or `config.json` (Asym, ST <= 4.1; ST >= 5 still reads it). Routes are
resolved as sentence-transformers 6.2 resolves them: a `route_mappings` entry for (task, "text"),
(task, None), (None, "text") or (None, None), else the route named like the task, else `default_route`
(which `allow_empty_key` sets to the first route when none is given).

Portable folders are written as Asym with the default route first and `allow_empty_key`, which every
version from 2.2 reads; ST >= 5 then takes the first route as the default, like st. ST <= 4.1 route only
dict inputs ({"query": text}) and pass plain text through no route at all (their Asym did that).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, ModelFolderError, StError
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.format.specs.router import ASYM_CONFIG, ROUTER_CONFIG
from st_cli.model import registry, resolve
from st_cli.model.modules.base import Features, Module, local_folder

Routes = dict[str, list[Module]]


@registry.register(SPECS["Router"])
class Router(Module):
    """`routes`: {route: [module specs as in a recipe]}; `default_route`: the route used without a task
    (none: a task is required, unless `allow_empty_key` picks the first route)."""

    save_in_root: ClassVar[bool] = True  # as the first module sentence-transformers saves it in the root
    forward_kwargs: ClassVar[set[str]] = {"task"}
    tokenize_kwargs: ClassVar[set[str]] = {"task"}

    def __init__(
        self, routes: dict[str, list[dict[str, Any]]], default_route: str | None = None, allow_empty_key: bool = True
    ) -> None:
        super().__init__()
        built = {name: [_build(spec) for spec in specs] for name, specs in routes.items()}
        self._setup(built, default_route, allow_empty_key, {})
        self.untrained = any(m.untrained for modules in built.values() for m in modules)

    @classmethod
    def from_routes(
        cls, routes: Routes, default_route: str | None, allow_empty_key: bool, mappings: dict[tuple[Any, Any], str]
    ) -> Router:
        module = cls.__new__(cls)
        Module.__init__(module)
        module._setup(routes, default_route, allow_empty_key, mappings)
        return module

    def _setup(
        self, routes: Routes, default: str | None, allow_empty_key: bool, mappings: dict[tuple[Any, Any], str]
    ) -> None:
        if not routes:
            raise ConfigValueError("routes", "needs at least one route, e.g. {query: [...], document: [...]}")
        unknown = [r for r in [default, *mappings.values()] if r is not None and r not in routes]
        if unknown:
            raise ConfigValueError("default_route", f"{unknown[0]!r} is not a route ({', '.join(routes)})")
        self.routes = torch.nn.ModuleDict({name: torch.nn.ModuleList(modules) for name, modules in routes.items()})
        self.allow_empty_key = allow_empty_key
        # sentence-transformers: with allow_empty_key and no default, the first route is the default.
        self.default_route = default if default is not None or not allow_empty_key else next(iter(routes))
        self.route_mappings = mappings

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        routes = kwargs.get("routes")
        if not isinstance(routes, dict) or not routes:
            raise ConfigValueError("routes", "expected a mapping of route names to module lists, e.g. {query: [...]}")
        default = kwargs.get("default_route")
        if default is not None and default not in routes:
            raise ConfigValueError("default_route", f"{default!r} is not a route ({', '.join(map(str, routes))})")
        planned, widths = {}, {}
        for name, specs in routes.items():
            planned[str(name)], widths[str(name)] = _plan_route(str(name), specs, input_dim)
        if len(set(widths.values())) > 1:
            found = ", ".join(f"{name}: {w}" for name, w in widths.items())
            raise ConfigValueError("routes", f"every route must give the same width ({found})")
        return {**kwargs, "routes": planned}, next(iter(widths.values()))

    # ------------------------------------------------------------ running

    @property
    def steps(self) -> Routes:
        return {name: list(modules) for name, modules in self.routes.items()}  # type: ignore[call-overload]

    def resolve(self, task: str | None) -> str:
        """The route for `task` (ST 6.2's order); a StError naming the routes when there is none."""
        for key in ((task, "text"), (task, None), (None, "text"), (None, None)):
            if key in self.route_mappings:
                return self.route_mappings[key]
        if task is not None:
            if task in self.routes:
                return task
            raise StError(f"Router: no route for task {task!r}; this model's routes: {', '.join(self.routes)}")
        if self.default_route is None:
            raise StError(
                f"Router: this model has no default route; give a task ({', '.join(self.routes)}), "
                "e.g. st encode --task query, or model.encode(texts, task='query')"
            )
        return self.default_route

    def check_call(self, kwargs: dict[str, Any]) -> None:
        self.resolve(kwargs.get("task"))

    def probe_kwargs(self) -> dict[str, Any]:
        return {} if self.default_route is not None else {"task": next(iter(self.routes))}

    def tokenize(self, texts: list[str], task: str | None = None, **kwargs: Any) -> Features:
        first: Any = self.steps[self.resolve(task)][0]  # an input module, when the Router comes first
        return first.tokenize(texts)  # type: ignore[no-any-return]

    def forward(self, features: Features, task: str | None = None, **kwargs: Any) -> Features:
        for module in self.steps[self.resolve(task)]:
            features = module(features)
        return features

    def get_sentence_embedding_dimension(self) -> int | None:
        route = self.default_route or next(iter(self.routes))
        return next((d for m in reversed(self.steps[route]) if (d := m.get_sentence_embedding_dimension())), None)

    def get_max_seq_length(self) -> int | None:
        lengths = [getattr(m[0], "get_max_seq_length", lambda: None)() for m in self.steps.values()]
        return max((n for n in lengths if n), default=None)

    # ------------------------------------------------------------ persistence

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        """Each module in `<route>_<i>_<Class>/` (ST 6.2's names), the routing table beside them."""
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        order = list(self.routes)
        if format == "portable" and self.default_route is not None:  # ST >= 5 default to the first route
            order = [self.default_route] + [r for r in order if r != self.default_route]
        types: dict[str, str] = {}
        structure: dict[str, list[str]] = {}
        for name in order:
            structure[name] = []
            for i, module in enumerate(self.steps[name]):
                sub = f"{name}_{i}_{type(module).__name__}"
                module.save(str(folder / sub), format=format)
                types[sub] = resolve.type_string_for(module, format)
                structure[name].append(sub)
        if format == "portable":  # Asym's config: the one every version reads
            parameters: dict[str, Any] = {"allow_empty_key": self.default_route is not None}
            layout.write_json(folder / ASYM_CONFIG, {"types": types, "structure": structure, "parameters": parameters})
            return
        parameters = {
            "default_route": self.default_route,
            "allow_empty_key": self.allow_empty_key,
            "route_mappings": {str(k): v for k, v in self.route_mappings.items()},
        }
        layout.write_json(folder / ROUTER_CONFIG, {"types": types, "structure": structure, "parameters": parameters})

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Router:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        path, config = read_router_config(folder)
        modules: dict[str, Module] = {}
        for sub, type_string in config["types"].items():
            layout.module_folder(folder, sub, path)  # refuses a sub-folder outside the model
            sub_cls = resolve.class_for_type_string(type_string, folder)
            modules[sub] = sub_cls.load(str(folder), subfolder=sub)
        try:
            routes = {name: [modules[sub] for sub in subs] for name, subs in config["structure"].items()}
        except KeyError as e:
            raise ModelFolderError(f"{path}: structure names {e}, which is not in types") from None
        parameters = config["parameters"]
        try:
            return cls.from_routes(
                routes,
                parameters.get("default_route"),
                bool(parameters.get("allow_empty_key", True)),
                _mappings(parameters.get("route_mappings") or {}, path),
            )
        except ConfigValueError as e:
            raise ModelFolderError(f"{path}: {e.key}: {e.problem}") from None


def read_router_config(folder: Path) -> tuple[Path, dict[str, Any]]:
    """router_config.json (ST >= 5.0) or Asym's config.json, checked for shape."""
    path = next((folder / n for n in (ROUTER_CONFIG, ASYM_CONFIG) if (folder / n).is_file()), folder / ROUTER_CONFIG)
    raw = layout.read_json(path)
    tables = isinstance(raw, dict) and isinstance(raw.get("types"), dict) and isinstance(raw.get("structure"), dict)
    if not tables:
        raise ModelFolderError(f"{path}: expected 'types' and 'structure' mappings (a Router/Asym config)")
    raw.setdefault("parameters", {})
    if not isinstance(raw["parameters"], dict):
        raise ModelFolderError(f"{path}: 'parameters' must be a mapping")
    return path, raw


def _mappings(raw: dict[str, Any], path: Path) -> dict[tuple[Any, Any], str]:
    """route_mappings keys are written as str(tuple): "('query', None)"; parsed back as ST does."""
    out = {}
    for key, route in raw.items():
        try:
            parsed = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            raise ModelFolderError(f"{path}: route_mappings key {key!r} is not a (task, modality) pair") from None
        if isinstance(parsed, tuple) and len(parsed) == 2:
            modality = tuple(sorted(parsed[1])) if isinstance(parsed[1], (tuple, list)) else parsed[1]
            out[(parsed[0], modality)] = route
    return out


def _build(spec: dict[str, Any]) -> Module:
    """A module of a route from its planned recipe spec ({type: ..., **kwargs})."""
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    return registry.get(spec["type"])(**kwargs)


def _plan_route(name: str, specs: Any, input_dim: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """Plan each module of one route in order (widths flow through); errors name routes.NAME[i].KEY."""
    if not isinstance(specs, list) or not specs:
        raise ConfigValueError(f"routes.{name}", "expected a non-empty list of modules")
    planned, dim = [], input_dim
    for i, spec in enumerate(specs):
        where = f"routes.{name}[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ConfigValueError(where, "expected a mapping with a 'type'")
        try:
            cls = registry.get(spec["type"])
        except StError as e:
            raise ConfigValueError(f"{where}.type", str(e)) from None
        if cls is Router:
            raise ConfigValueError(f"{where}.type", "a Router inside a Router is not supported")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        try:
            kwargs, dim = cls.plan(kwargs, dim)
        except ConfigValueError as e:
            raise ConfigValueError(f"{where}.{e.key}" if e.key else where, e.problem) from None
        planned.append({"type": spec["type"], **kwargs})
    return planned, dim
