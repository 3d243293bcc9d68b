"""The README.md model card that `st build` writes into a model folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_cli._version import __version__

if TYPE_CHECKING:
    from st_cli.format.layout import Format, ModuleEntry
    from st_cli.model.model import Model


def model_card(model: Model, entries: list[ModuleEntry], fmt: Format, name: str) -> str:
    """Markdown: the stack, its dimensions, and how to use the folder with st and sentence-transformers."""
    rows = []
    for entry, module in zip(entries, model.steps, strict=True):
        dim = module.get_sentence_embedding_dimension()
        config = ", ".join(f"{k}={v}" for k, v in module.get_config_dict().items())
        untrained = " (untrained)" if module.untrained else ""
        rows.append(
            f"| {entry.idx} | {type(module).__name__}{untrained} | `{entry.path or '.'}` | {config} | {dim or ''} |"
        )
    prompts = "".join(f"\n- `{k}`: {v!r}" for k, v in model.prompts.items()) or " none"
    warning = ""
    if any(m.untrained for m in model.steps):
        warning = (
            "\n> **Note:** some modules are freshly initialised; fine-tune the model before using its embeddings.\n"
        )
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, st-cli]
---

# {name}

Built with st {__version__} in the `{fmt}` folder format.
Embedding dimension: **{model.get_sentence_embedding_dimension()}**;
max sequence length: **{model.get_max_seq_length()}**; similarity: **{model.similarity_fn_name}**.
{warning}
| # | module | path | config | output dim |
|---|---|---|---|---|
{chr(10).join(rows)}

Prompts:{prompts}
Default prompt: {model.default_prompt_name or "none"}

## Use with st

```bash
st encode texts.txt --model ./{name} --out embeddings.npy
st verify ./{name}
```

## Use with sentence-transformers

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("./{name}")
embeddings = model.encode(["A sentence to embed."])
```
"""
