"""The model: an ordered stack of modules, built from a recipe or loaded from a folder, and saved."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import ConfigValueError, ModelFolderError, StError, first_line
from st_cli.format import hub, kinds, layout, manifest
from st_cli.format.probes import PROBE_ATOL, PROBE_TEXTS
from st_cli.model import card, custom, registry, resolve
from st_cli.model.modules.base import Features, InputModule, Module
from st_cli.model.modules.normalize import normalize as normalize_rows
from st_cli.model.recipe import Recipe


class CustomModuleError(StError):
    """A custom module's forward failed: names `modules[i]`, its class and the file it came from."""

    def __init__(self, index: int, module: Module, error: BaseException) -> None:
        self.index = index
        cls = type(module)
        try:
            where = f" in {custom.source_file(cls)}"
        except (StError, TypeError):
            where = f" in {cls.__module__}"
        self.detail = f"{cls.__name__}{where}: forward failed: {type(error).__name__}: {first_line(error)}"
        super().__init__(f"modules[{index}]: {self.detail}")


class Model(torch.nn.Module):
    """Modules run in order on a features dict; the first one tokenizes."""

    def __init__(
        self,
        modules: Sequence[Module],
        *,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
        module_kwargs: Sequence[Sequence[str]] | None = None,
        tail: bool = False,
        max_active_dims: int | None = None,
    ) -> None:
        super().__init__()
        # An input module, or a module that hands texts to one (a Router whose routes start with one);
        # `tail`: the modules after an input module that runs elsewhere (model/runtime.py), never tokenizing.
        if not tail and (not modules or not callable(getattr(modules[0], "tokenize", None))):
            raise StError("the first module of a stack must be an input module such as Transformer")
        self.stack = torch.nn.ModuleList(modules)
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.truncate_dim = truncate_dim
        declared = module_kwargs if module_kwargs is not None else [() for _ in modules]
        self.module_kwargs = [tuple(names) for names in declared]
        # A SparseEncoder scores by dot product and keeps its SparseAutoEncoder's k active dimensions unless told
        # otherwise, as sentence-transformers' SparseEncoder does.
        self.similarity_fn_name = similarity_fn_name or ("dot" if self.is_sparse else "cosine")
        hooks: list[Any] = [getattr(m, "default_max_active_dims", None) for m in self.all_modules()]
        defaults = (hook() for hook in hooks if callable(hook))
        self.max_active_dims: int | None = max_active_dims or next((k for k in defaults if k), None)
        self.eval()

    # ------------------------------------------------------------ running

    @property
    def steps(self) -> list[Module]:
        """The modules in order (typed: to mypy a ModuleList only holds plain torch modules)."""
        return list(self.stack)  # type: ignore[arg-type]

    @property
    def input_module(self) -> InputModule:
        return self.stack[0]  # type: ignore[return-value]

    @property
    def batch_dependent(self) -> bool:
        """A module reads the padding (CNN): a text's vector depends on its batch, so batch as ST does."""
        return any(m.spec is not None and m.spec.batch_dependent for m in self.steps)

    def all_modules(self) -> list[Module]:
        """Every module of the stack, those inside a Router's routes too (in order)."""
        found: list[Module] = []
        for module in self.steps:
            found.append(module)
            routes: Any = getattr(module, "routes", None)
            if isinstance(routes, torch.nn.ModuleDict):
                found.extend(m for route in routes.values() for m in route.children())  # type: ignore[misc]
        return found

    @property
    def runs_concurrently(self) -> bool:
        """Batches may run on several threads at once: every module is st's own, and no transformers
        model came from remote code (custom code may keep state between calls)."""
        builtin = all(registry.is_registered(type(m)) for m in self.all_modules())
        return builtin and not any(type(m).__module__.startswith("transformers_modules") for m in self.modules())

    @property
    def is_sparse(self) -> bool:
        """A module gives sparse vectors (SpladePooling, SparseStaticEmbedding, SparseAutoEncoder): a SparseEncoder."""
        return any(m.spec is not None and m.spec.sparse for m in self.all_modules())

    @property
    def model_type(self) -> str:
        """config_sentence_transformers.json's model_type: which sentence-transformers class loads the folder."""
        return "SparseEncoder" if self.is_sparse else "SentenceTransformer"

    def output_vocabulary(self, task: str | None = None) -> list[str] | None:
        """What each output dimension stands for: token strings by id (SPLADE, SparseStaticEmbedding), or None
        (latent dimensions, dense vectors). A Router answers for the route `task` takes."""
        vocab: list[str] | None = None
        for module in self.steps:
            route, steps = getattr(module, "resolve", None), getattr(module, "steps", None)
            modules = steps[route(task)] if callable(route) and isinstance(steps, dict) else [module]
            for m in modules:
                hook: Any = getattr(m, "output_vocabulary", None)
                if callable(hook):
                    vocab = hook()
        return vocab

    def get_sentence_embedding_dimension(self) -> int | None:
        for module in reversed(self.steps):
            dim = module.get_sentence_embedding_dimension()
            if dim is not None:
                return dim
        return None

    def get_max_seq_length(self) -> int | None:
        return self.input_module.get_max_seq_length()

    def declared_kwargs(self, index: int) -> set[str]:
        """The encode-time kwargs module `index` takes: from modules.json plus its class."""
        return set(self.module_kwargs[index]) | set(self.steps[index].forward_kwargs)

    def check_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Every kwarg is declared by some module (`task` always: it picks a prompt too); each module agrees."""
        declared = set().union(*(self.declared_kwargs(i) for i in range(len(self.stack))))
        unknown = sorted(set(kwargs) - declared - {"task"})
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise StError(f"keyword argument {unknown[0]!r} is not declared by any module (declared: {known})")
        for index, module in enumerate(self.steps):
            module.check_call({k: v for k, v in kwargs.items() if k in self.declared_kwargs(index)})

    def probe_kwargs(self) -> dict[str, Any]:
        """What st's own checks (manifest probes, verify) encode with: e.g. a task for a Router with no default."""
        return {k: v for module in self.steps for k, v in module.probe_kwargs().items()}

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None, task: str | None = None) -> str:
        return layout.resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name, task)

    def tokenize(self, texts: list[str], prompt: str = "", **kwargs: Any) -> Features:
        own = {k: v for k, v in kwargs.items() if k in self.input_module.tokenize_kwargs}
        features = self.input_module.tokenize([prompt + t for t in texts] if prompt else texts, **own)
        if prompt and hasattr(self.input_module, "prompt_length"):
            features["prompt_length"] = self.input_module.prompt_length(prompt)  # type: ignore[assignment,operator]
        return features

    def forward(self, features: Features, **kwargs: Any) -> Features:
        if self.max_active_dims is not None:  # a SparseAutoEncoder keeps that many latents
            kwargs = {"max_active_dims": self.max_active_dims, **kwargs}
        for index, module in enumerate(self.steps):
            own = {k: v for k, v in kwargs.items() if k in self.declared_kwargs(index)}
            if registry.is_registered(type(module)):
                try:
                    features = module(features, **own)
                except KeyError as e:  # a stack in the wrong order behind custom code inspect cannot see through
                    problem = f"needs features[{e.args[0]!r}], which no module before it wrote"
                    raise StError(f"modules[{index}] {type(module).__name__}: {problem}") from None
                continue
            try:
                features = module(features, **own)
            except StError:
                raise
            except Exception as e:  # custom code may fail in any way: say which module, class and file
                raise CustomModuleError(index, module, e) from None
        return features

    @torch.inference_mode()
    def embed(self, texts: list[str], prompt: str = "", **kwargs: Any) -> torch.Tensor:
        """One padded batch of texts to sentence embeddings (before truncation)."""
        features = self.forward(self.tokenize(texts, prompt, **kwargs), **kwargs)
        if "sentence_embedding" not in features:
            raise StError("the stack gives no sentence embedding: its last module must pool (e.g. a Pooling)")
        return features["sentence_embedding"]

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool = False,
        truncate_dim: int | None = None,
        max_active_dims: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Texts to a float32 array (n, dim), in input order.

        Batches are cut as sentence-transformers cuts them (longest text first, `batch_size` rows),
        so results agree with it to the last bits under the same transformers version.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        wrong = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
        if wrong is not None:  # an image, say: st encodes text only
            kind = type(items[wrong])
            raise StError(f"input {wrong} is a {kind.__module__}.{kind.__name__} object, not a string: st encodes text")
        if max_active_dims is not None:  # this call only (sentence-transformers' encode argument)
            saved, self.max_active_dims = self.max_active_dims, _positive(max_active_dims, "max_active_dims")
            try:
                return self.encode(texts, batch_size=batch_size, prompt_name=prompt_name, prompt=prompt,
                                   normalize=normalize, truncate_dim=truncate_dim, **kwargs)  # fmt: skip
            finally:
                self.max_active_dims = saved
        self.check_kwargs(kwargs)
        prefix = self.resolve_prompt(prompt, prompt_name, kwargs.get("task"))
        order = np.argsort([-len(t) for t in items])
        rows: list[torch.Tensor] = [torch.empty(0)] * len(items)
        for start in range(0, len(items), batch_size):
            batch = order[start : start + batch_size]
            out = self.embed([items[i] for i in batch], prefix, **kwargs)
            for i, row in zip(batch, out, strict=True):
                rows[i] = row
        if not items:
            return np.zeros((0, self.get_sentence_embedding_dimension() or 0), dtype=np.float32)
        result = self.finish(torch.stack(rows), normalize=normalize, truncate_dim=truncate_dim)
        return result[0] if single else result

    def finish(
        self, embeddings: torch.Tensor, *, normalize: bool = False, truncate_dim: int | None = None
    ) -> np.ndarray:
        """Keep a sparse model's `max_active_dims` largest values (by magnitude, as ST's SparseEncoder), truncate
        after the whole stack (as ST does), then optionally L2-normalise."""
        if self.max_active_dims is not None and self.max_active_dims < embeddings.shape[-1]:
            top = torch.topk(embeddings.abs(), k=self.max_active_dims, dim=-1).indices
            embeddings = torch.zeros_like(embeddings).scatter_(-1, top, embeddings.gather(-1, top))
        dim = truncate_dim or self.truncate_dim
        if dim:
            embeddings = embeddings[:, :dim]
        if normalize:
            embeddings = normalize_rows(embeddings)  # a zero row stays zero in float16 too
        return embeddings.float().cpu().numpy()

    # ------------------------------------------------------------ saving

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        format: layout.Format = "portable",
        force: bool = False,
        recipe: Recipe | None = None,
        claim: fsio.Claim | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write the folder atomically: built beside `path`, published at the end by a no-replace rename.

        `claim` (from `fsio.claim` at the start of a longer job) makes --force replace only what
        existed when the job started. `training` is `st train`'s record of how the weights were
        fitted, kept in the manifest.
        """
        if format not in layout.FORMATS:
            raise StError(f"unknown format {format!r}; choose from {', '.join(layout.FORMATS)}")
        if format == "portable" and self.truncate_dim:
            raise StError(
                "truncate_dim is ignored by sentence-transformers < 5.4, so it cannot be portable; "
                "use --format st6, or shrink the last Dense's out_features instead"
            )
        target = Path(path)
        with fsio.atomic_folder(claim or target, force=force, kind=layout.MODEL_FOLDER) as tmp:
            entries = [self._save_module(tmp, i, module, format) for i, module in enumerate(self.steps)]
            fsio.pause_point("build:modules-written")
            layout.write_model_files(tmp, entries, self._model_config(), format)
            (tmp / layout.MODEL_CARD).write_text(card.model_card(self, entries, format, target.name), encoding="utf-8")
            manifest.write(tmp, self.build_manifest(tmp, format, recipe, training=training))
        return target

    def _save_module(self, root: Path, index: int, module: Module, fmt: layout.Format) -> layout.ModuleEntry:
        spec = module.spec if registry.is_registered(type(module)) else None
        in_root = index == 0 and module.save_in_root and (spec is None or fmt in spec.root_formats)
        rel = "" if in_root else layout.module_dir_name(index, type(module).__name__)
        (root / rel).mkdir(parents=True, exist_ok=True)
        if registry.is_registered(type(module)):
            module.save(str(root / rel), format=fmt)
        else:
            custom.save_module(module, root / rel, fmt)
            custom.copy_source(type(module), root)  # at the root, where every ST version looks for it
        return layout.ModuleEntry(
            idx=index,
            name=str(index),
            path=rel,
            type=resolve.type_string_for(module, fmt),
            kwargs=tuple(self.module_kwargs[index]),
        )

    def _model_config(self) -> layout.ModelConfig:
        import transformers

        return layout.ModelConfig(
            prompts=self.prompts,
            default_prompt_name=self.default_prompt_name,
            similarity_fn_name=self.similarity_fn_name,
            truncate_dim=self.truncate_dim,
            model_type=self.model_type,
            max_active_dims=self.max_active_dims if self.is_sparse else None,
            versions={"st_cli": __version__, "transformers": transformers.__version__, "pytorch": torch.__version__},
        )

    def build_manifest(
        self,
        root: Path,
        fmt: layout.Format | None,
        recipe: Recipe | None,
        *,
        dialect: str | None = None,
        recorded_by: str | None = None,
        training: dict[str, Any] | None = None,
    ) -> manifest.Manifest:
        """st_manifest.json for the finished folder at `root`: file digests and the probes' embeddings."""
        import transformers

        try:
            embeddings = self.encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS), **self.probe_kwargs())
        except StError:
            raise
        except Exception as e:
            if all(registry.is_registered(type(m)) for m in self.steps):
                raise  # built-ins only: a bug in st
            problem = f"running the stack on the probe texts failed: {type(e).__name__}: {first_line(e)}"
            raise StError(f"{problem} (in custom module code?)") from None
        probes = manifest.Probes(
            texts=tuple(PROBE_TEXTS),
            embeddings=tuple(tuple(float(x) for x in row) for row in embeddings),
            prompt_name=self.default_prompt_name,
            atol=PROBE_ATOL,
        )
        return manifest.build(
            root,
            fmt=fmt,
            versions={"torch": torch.__version__, "transformers": transformers.__version__},
            probes=probes,
            recipe=recipe.to_json() if recipe else None,
            untrained_modules=[i for i, m in enumerate(self.stack) if m.untrained],
            dialect=dialect,
            recorded_by=recorded_by,
            training=training,
        )


# ---------------------------------------------------------------- building and loading


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise StError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_model(recipe: Recipe, status: Callable[[str], None] | None = None) -> Model:
    """Instantiate a recipe's stack; every random init is seeded with `recipe.seed`; `status` hears each module."""
    torch.manual_seed(recipe.seed)
    modules, module_kwargs = _base_modules(recipe)
    for i, spec in enumerate(recipe.modules):
        if status is not None:
            status(f"loading modules[{i}]: {spec.type}")
        cls = spec.module_class or registry.get(spec.type)
        # Custom code may fail in any way; built-ins only in the ways we know.
        expected = Exception if spec.module_class else (OSError, ValueError)
        try:
            modules.append(cls(**spec.kwargs))
        except ConfigValueError as e:
            raise recipe.error(f"modules[{i}].{e.key}" if e.key else f"modules[{i}]", e.problem, spec.line) from None
        except StError as e:
            raise recipe.error(f"modules[{i}]", str(e), spec.line) from None
        except expected as e:
            raise recipe.error(f"modules[{i}]", f"could not build {spec.type}: {first_line(e)}", spec.line) from None
        if spec.module_class:
            _check_custom_module(recipe, i, modules[-1])
    _wire_all_layer_embeddings(recipe, modules)
    return Model(
        modules,
        prompts=dict(recipe.prompts),
        default_prompt_name=recipe.default_prompt,
        similarity_fn_name=recipe.similarity,
        truncate_dim=recipe.truncate_dim,
        module_kwargs=module_kwargs + [spec.forward_kwargs for spec in recipe.modules],
    )


def _wire_all_layer_embeddings(recipe: Recipe, modules: list[Module]) -> None:
    """A module that pools every hidden state (WeightedLayerPooling) makes the input module give them."""
    first = len(modules) - len(recipe.modules)
    needing = [i for i, m in enumerate(modules) if m.needs_all_layer_embeddings]
    if needing and isinstance(modules[0], InputModule):
        try:
            modules[0].output_all_layers()
        except StError as e:
            index = needing[0] - first
            line = recipe.modules[index].line if index >= 0 else None
            raise recipe.error(f"modules[{index}]", str(e), line) from None


def _base_modules(recipe: Recipe) -> tuple[list[Module], list[tuple[str, ...]]]:
    """The first `keep` modules (and their declared kwargs) of the recipe's base model, if it has one."""
    if recipe.base is None:
        return [], []
    try:
        base = load_model(recipe.base)
    except StError as e:
        raise recipe.error("base", str(e)) from None
    keep = recipe.keep or len(base.steps)
    return base.steps[:keep], [tuple(k) for k in base.module_kwargs[:keep]]


def _check_custom_module(recipe: Recipe, index: int, module: Module) -> None:
    """Mark a fresh custom module untrained, and hold it to the width the recipe planned for it."""
    spec = recipe.modules[index]
    module.untrained = custom.untrained_at_build(module)
    reported = module.get_sentence_embedding_dimension()
    if reported is not None and spec.output_dim is not None and reported != spec.output_dim:
        problem = (
            f"{type(module).__name__} reports dimension {reported}, but the recipe inferred {spec.output_dim}; "
            "give the class a plan() classmethod that returns its output width"
        )
        raise recipe.error(f"modules[{index}]", problem, spec.line)


# What torch, safetensors and transformers raise on files that are damaged rather than on a bug in st.
_DAMAGED_FOLDER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, EOFError, RecursionError, OverflowError,
    MemoryError,
)  # fmt: skip


def refuse_damaged(root: Path) -> None:
    """Refuse, before any weights load, a folder `st inspect` finds broken: the first error that fails verify's
    layout or dimensions check, as one line naming the file (a damaged folder is bad input, DESIGN §6)."""
    from st_cli.format.summary import summarize

    for finding in summarize(str(root)).findings:
        if finding.severity == "error" and finding.check in ("layout", "dimensions"):
            message, path = finding.message, finding.path or ""
            if message.startswith(str(root)):  # already names the file
                raise ModelFolderError(message)
            located = path not in ("", ".") and message.startswith(f"{path}:")
            raise ModelFolderError(f"{root}/{message}" if located else f"{root}: {message}")


def load_model(
    name_or_path: str | os.PathLike[str], *, revision: str | None = None, trust_remote_code: bool = False
) -> Model:
    """Load a model folder (either dialect) or a Hub id into a Model."""
    root = hub.resolve_model(name_or_path, revision=revision)
    # A reranker or a token-vector model gives no sentence embedding: say what it is, before its stack is judged.
    kinds.refuse_unless(root, kinds.SENTENCE_TRANSFORMER, shown=str(name_or_path))
    entries = layout.read_modules_json(root)
    # sentence-transformers ignores config_sentence_transformers.json in a plain transformers folder.
    config = layout.ModelConfig() if layout.is_plain_folder(root) else layout.read_model_config(root)
    for entry in entries:
        layout.module_folder(root, entry.path)  # refuses paths that leave the folder
    refuse_damaged(root)
    return Model(
        load_modules(root, entries, trust_remote_code=trust_remote_code),
        prompts=config.prompts,
        default_prompt_name=config.default_prompt_name,
        similarity_fn_name=config.similarity_fn_name,
        truncate_dim=config.truncate_dim,
        module_kwargs=[e.kwargs for e in entries],
        max_active_dims=config.max_active_dims,
    )


def load_modules(root: Path, entries: Sequence[layout.ModuleEntry], *, trust_remote_code: bool = False) -> list[Module]:
    """The modules of `entries`, read from the folder at `root` (load_model's loop; model/runtime.py loads
    the modules after an exported Transformer with it)."""
    # Every class first, so an untrusted custom module stops the load before any weights are read.
    classes = [resolve.class_for_type_string(e.type, root, trust_remote_code=trust_remote_code) for e in entries]
    modules: list[Module] = []
    for entry, cls in zip(entries, classes, strict=True):
        builtin = registry.is_registered(cls)
        expected = _DAMAGED_FOLDER_ERRORS if builtin else Exception
        try:
            if entry.config is not None:  # supplied by st (a plain folder's Pooling): nothing to read
                modules.append(cls(**entry.config))
            else:
                modules.append(
                    cls.load(str(root), subfolder=entry.path) if builtin else custom.load_module(cls, root, entry.path)
                )
        except StError:
            raise
        except expected as e:
            raise ModelFolderError(f"{root / entry.path}: cannot load {entry.type}: {first_line(e)}") from None
        if not builtin:
            modules[-1].untrained = False  # its weights come from the folder now
    return modules


def build(
    recipe_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: layout.Format = "portable",
    force: bool = False,
    overrides: Sequence[str] = (),
    status: Callable[[str], None] | None = None,
) -> tuple[Model, Path]:
    """`st build`: recipe file → model folder. Checks everything it can before loading weights.

    `status` is told each step as it starts ("loading modules[0]: Transformer"), for a status line.
    """
    from st_cli.model.recipe import load_recipe

    say = status or (lambda _: None)
    if os.path.lexists(output) and not force:  # refused before anything is read
        fsio.claim(output)
    say(f"reading {recipe_path}")
    recipe = load_recipe(recipe_path, overrides)
    fsio.refuse_inputs_inside(Path(output), recipe.input_paths(), "build")  # never an input, --force or not
    # --force replaces only what exists now (not what appears later), and only a model folder
    claim = fsio.claim(output, force=force, kind=layout.MODEL_FOLDER)
    recipe.check_format(format)
    say("loading the modules' weights")
    model = build_model(recipe, status=say)
    say(f"writing {output} (weights, probe embeddings, sha256 manifest)")
    try:
        return model, model.save(output, format=format, force=force, recipe=recipe, claim=claim)
    except CustomModuleError as e:
        first = len(model.steps) - len(recipe.modules)  # modules kept from a base come first
        spec = recipe.modules[e.index - first] if e.index >= first else None
        raise recipe.error(f"modules[{e.index - first}]", e.detail, spec.line) if spec else e from None
