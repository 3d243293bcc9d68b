"""Router (Asym before ST 5): a stack of modules per route (query, document, ...), each module in its own
subfolder; its width is its default route's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from st_cli.errors import ModelFolderError
from st_cli.format.files import read_json, read_safetensors_header
from st_cli.format.spec import (
    BASE_PREFIX,
    LEGACY_PREFIX,
    MODULE_CONFIG,
    Config,
    LoaderNote,
    ModuleView,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    builtin_spec_for_type_string,
)

ROUTER_CONFIG = "router_config.json"  # ST >= 5.0
ASYM_CONFIG = "config.json"  # Asym (ST <= 4.1), and st's portable folders


def _decode_router(raw: Config, path: Path) -> Config:
    """The routing table, plus each route's module names and widths (from the sub-modules' own files)."""
    types, structure, parameters = raw.get("types"), raw.get("structure"), raw.get("parameters") or {}
    if not isinstance(types, dict) or not isinstance(structure, dict) or not isinstance(parameters, dict):
        raise ModelFolderError(f"{path}: expected 'types' and 'structure' mappings (a Router/Asym config)")
    routes: dict[str, list[str | None]] = {}
    widths: dict[str, tuple[int | None, int | None]] = {}
    for name, subs in structure.items():
        if not isinstance(subs, list) or any(s not in types for s in subs):
            raise ModelFolderError(f"{path}: structure[{name!r}] names a module that is not in types")
        specs = [builtin_spec_for_type_string(str(types[s])) for s in subs]
        routes[str(name)] = [spec.name if spec else None for spec in specs]
        widths[str(name)] = _route_widths(path.parent, subs, specs)
    default = parameters.get("default_route")
    if default is None and parameters.get("allow_empty_key", True) and routes:
        default = next(iter(routes))
    return {"routes": routes, "route_widths": widths, "default_route": default}


def _route_widths(folder: Path, subs: list[str], specs: list[TypeSpec | None]) -> tuple[int | None, int | None]:
    """(input, output) width of one route: each module's width rule on its config and safetensors header."""
    first: int | None = None
    dim: int | None = None
    for i, (sub, spec) in enumerate(zip(subs, specs, strict=True)):
        if spec is None or Path(sub).is_absolute() or ".." in Path(sub).parts:
            return first, None  # a folder outside the model is never read (inspect reports the path)
        sub_folder = folder / sub
        try:
            config = spec.read_config(sub_folder)
            weights = sub_folder / "model.safetensors"
            header = read_safetensors_header(weights) if weights.is_file() else {}
            hf = read_json(sub_folder / MODULE_CONFIG) if spec.hf_model else None
        except (ModelFolderError, AttributeError, TypeError, ValueError):
            return first, None
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        widths = spec.width(WidthContext(config, {}, shapes, dim, hf if isinstance(hf, dict) else None))
        first = widths.input if i == 0 else first
        dim = widths.output
    return first, dim


def _router_notes(m: ModuleView) -> Iterable[LoaderNote]:
    reason = f"{m.path or '.'}: ST <= 4.1 route only dict inputs ({{'query': text}}); plain text takes no route"
    yield LoaderNote("ST<=5.3", "partial", reason)


def _router_width(ctx: WidthContext) -> Widths:
    widths = ctx.config.get("route_widths") or {}
    route = ctx.config.get("default_route") or next(iter(widths), None)
    if route not in widths:
        return Widths(ctx.incoming, None)
    return Widths(*widths[route])


SPEC = add_builtin(
    TypeSpec(
        name="Router",
        module_file="router",
        legacy_type=LEGACY_PREFIX + "Asym",  # every version reads Asym; ST >= 5 as a Router
        st6_type=BASE_PREFIX + "router.Router",
        read_types=(LEGACY_PREFIX + "Router",),
        since_by_type={LEGACY_PREFIX + "Router": "5.0"},
        st6_type_since="5.4",
        config_files=(ROUTER_CONFIG, ASYM_CONFIG),
        decode=_decode_router,
        encode=lambda config, fmt: {},  # Router.save writes its table: it names the sub-modules' type strings
        width=_router_width,
        loader_notes=_router_notes,
        needs_config=True,
        save_in_root=True,
        routes_text=True,
        width_mismatch="warning",
        # They read the folder and route dict inputs ({"query": text}, tests/test_router.py), but plain text
        # goes through no route at all (their Asym's allow_empty_key), so plain vectors are not comparable.
        fails_in=dict.fromkeys(("2", "3", "4"), "routes only dict inputs; plain text takes no route (Asym)"),
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {
                "type": "Router",
                "routes": {
                    "query": [{"type": "Dense", "out_features": 8}],
                    "document": [{"type": "Dense", "out_features": 8}, {"type": "Normalize"}],
                },
                "default_route": "document",
            },
        ),
    )
)
