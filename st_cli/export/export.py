"""`export_model(ExportOptions)`: load the model, write the chosen variants into a work folder, publish them.

In place (no `output`): each file is published into the model folder by a no-replace rename (a replacing one
under --force), then st_manifest.json, if the folder has one, records their sha256. With `output`: a copy of
the folder plus the exported files, published as one new folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli.errors import StError
from st_cli.export import producers
from st_cli.export.options import ExportedFile, ExportOptions, ExportReport
from st_cli.export.variants import FLOAT_FILE, Shape, Variant, chosen, require_extras
from st_cli.format import hub, layout, manifest
from st_cli.format.files import sha256_file

Status = Callable[[str], None]
EXPORTED_FILE = fsio.Kind("an exported model file", folder=False)


class NotExportableError(StError):
    """The model's first module is not a transformers model st can export."""


def export_model(options: ExportOptions, status: Status | None = None) -> ExportReport:
    """Write the exported variants the options ask for; see the module docstring for where."""
    say = status or (lambda _: None)
    started = time.perf_counter()
    variants = chosen(options)
    require_extras(variants)
    local = Path(options.model).expanduser()
    if options.output is None and not local.is_dir():
        raise StError(f"{options.model}: not a local folder; pass -o OUT to write a copy with the exported files")
    root = hub.resolve_model(options.model)
    folder_claim = None
    if options.output is not None:
        fsio.refuse_inputs_inside(options.output, [root], "export")  # also inside it: the copy would copy itself
        folder_claim = fsio.claim(options.output, force=options.force, kind=layout.MODEL_FOLDER)
    else:  # every target refused up front, before the model loads
        for rel in (rel for variant in variants for rel in variant.targets):
            fsio.claim(root / rel, force=options.force, kind=EXPORTED_FILE)
    say(f"loading {options.model}")
    st_model, model, shape = _exportable(root, options.trust_remote_code)
    inputs = producers.model_inputs(model)
    target = options.output if options.output is not None else root
    target.parent.mkdir(parents=True, exist_ok=True)
    work_beside = target if options.output is not None else root / "onnx"
    fsio.remove_stale_temps(work_beside)  # what a killed export left
    work = fsio.temp_folder(work_beside)
    try:
        with _quiet_tools():
            _produce(variants, work, model, inputs, shape, say)
        if folder_claim is not None:
            files = _publish_copy(root, work, variants, folder_claim, st_model, say)
        else:
            files = _publish_in_place(root, work, variants, options.force, say)
    finally:
        fsio.remove(work)
    recorded = _record(target, files, say)
    notes = () if recorded else (f"no {layout.MANIFEST} in the folder: sha256 not recorded (st verify --record)",)
    return ExportReport(
        folder=str(target),
        variants={v.name: v.file for v in variants},
        files=tuple(files),
        inputs=inputs,
        opset=producers.OPSET,
        manifest=recorded,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def _exportable(root: Path, trust_remote_code: bool) -> tuple[Any, Any, Shape]:
    """st's Model, and the transformers model of its first module; NotExportableError for any other first module."""
    from st_cli.model import registry
    from st_cli.model.model import load_model
    from st_cli.model.modules.transformer import Transformer

    model = load_model(root, trust_remote_code=trust_remote_code)
    first = model.input_module
    kind = type(first).__name__
    if not registry.is_registered(type(first)):
        raise NotExportableError(
            f"{root}: module 0 is custom code ({kind}); st exports only a Transformer module, "
            "whose transformers model it knows"
        )
    if not isinstance(first, Transformer):
        raise NotExportableError(
            f"{root}: module 0 is a {kind}, not a Transformer; only a Transformer module is exported "
            "(sentence-transformers' ONNX and OpenVINO backends run Transformer modules only)"
        )
    auto = first.full_model()
    config = auto.config
    shape = Shape(
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
    )
    return model, auto, shape


def _produce(
    variants: list[Variant], work: Path, model: Any, inputs: tuple[str, ...], shape: Shape, say: Status
) -> None:
    """The float32 ONNX first (every other variant is made from it), then each variant, into `work/<variant>/`."""
    source = work / "float" / FLOAT_FILE
    source.parent.mkdir(parents=True)
    say(f"exporting the transformers model to ONNX ({', '.join(inputs)} → last_hidden_state)")
    producers.export_float(model, inputs, source)
    for variant in variants:
        out = work / variant.name / variant.file
        out.parent.mkdir(parents=True)
        if variant.make is None:
            for path in source.parent.iterdir():
                os.link(path, out.parent / path.name)
            continue
        say(f"writing {variant.file}")
        variant.make(source, out, shape)


@contextlib.contextmanager
def _quiet_tools() -> Iterator[None]:
    """onnxruntime's optimiser and quantiser log advice to the root logger ("no gpu", "consider pre-processing"):
    not the user's business while st runs them. Errors still raise."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]  # torch: "torchvision is not installed"
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # "There is no gpu for onnxruntime to do optimization." is an ERROR
    try:
        with warnings.catch_warnings():  # torch's exporter warns about its own internals (axis renames)
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _made(work: Path, variants: list[Variant]) -> list[tuple[str, Path]]:
    """(path relative to the model folder, file in the work folder) of every file the variants made, in table order."""
    found = []
    for variant_dir in (work / v.name for v in variants):
        found += [(p.relative_to(variant_dir).as_posix(), p) for p in sorted(variant_dir.rglob("*")) if p.is_file()]
    return found


def _publish_in_place(root: Path, work: Path, variants: list[Variant], force: bool, say: Status) -> list[ExportedFile]:
    files = []
    for rel, path in _made(work, variants):
        target = root / rel
        say(f"publishing {rel}")
        claim = fsio.claim(target, force=force, kind=EXPORTED_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        files.append(_described(rel, path))
        fsio.publish(path, claim)
    return files


def _publish_copy(
    root: Path, work: Path, variants: list[Variant], claim: fsio.Claim, st_model: Any, say: Status
) -> list[ExportedFile]:
    """The copy is st's own new folder: it always leaves with a manifest (one made here, as `st verify --record`
    makes one, when the source had none), so the exported files' sha256 are recorded."""
    files = []
    say(f"copying {root} to {claim.path}")
    with fsio.atomic_folder(claim) as tmp:
        shutil.copytree(root, tmp, dirs_exist_ok=True, symlinks=False)
        for rel, path in _made(work, variants):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            files.append(_described(rel, path))
            os.replace(path, target)
        if manifest.read(tmp) is None:
            say(f"writing {layout.MANIFEST} (sha256 of every file, probe embeddings)")
            dialect = layout.dialect(layout.read_modules_json(tmp))
            manifest.write(tmp, st_model.build_manifest(tmp, None, None, dialect=dialect, recorded_by="st export"))
        _record(tmp, files, say)
    return files


def _described(rel: str, path: Path) -> ExportedFile:
    return ExportedFile(rel, path.stat().st_size, sha256_file(path))


def _record(folder: Path, files: list[ExportedFile], say: Status) -> bool:
    """Add the files' sha256 to the folder's st_manifest.json (replaced atomically); False when it has none."""
    found = manifest.read(folder)
    if found is None:
        return False
    recorded = dict(found.files or {})
    if all(recorded.get(f.path) == f.sha256 for f in files):
        return True
    say(f"recording sha256 in {layout.MANIFEST}")
    recorded.update({f.path: f.sha256 for f in files})
    updated = dataclasses.replace(found, files=dict(sorted(recorded.items())))
    fsio.write_text_atomic(folder / layout.MANIFEST, manifest.dumps(updated), force=True)
    return True
