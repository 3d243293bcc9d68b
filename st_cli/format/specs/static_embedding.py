"""StaticEmbedding: one vector per token of a tokenizer.json, averaged (ST's and model2vec's folders); no config."""

from __future__ import annotations

from st_cli.format.spec import (
    LEGACY_PREFIX,
    ST_PREFIX,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
)

_STATIC_TABLES = ("embedding.weight", "embeddings")  # sentence-transformers' key, model2vec's


def _static_width(ctx: WidthContext) -> Widths:
    table = next((ctx.shapes[k] for k in _STATIC_TABLES if k in ctx.shapes), None)
    return Widths(None, table[1] if table is not None and len(table) == 2 else None)


SPEC = add_builtin(
    TypeSpec(
        name="StaticEmbedding",
        module_file="static_embedding",
        legacy_type=LEGACY_PREFIX + "StaticEmbedding",
        st6_type=ST_PREFIX + "static_embedding.StaticEmbedding",
        config_files=(),  # no config: model2vec's root config.json is its own, ignored by every loader
        decode=lambda raw, path: {},
        encode=lambda config, fmt: {},
        width=_static_width,
        input_module=True,
        save_in_root=True,
        root_formats=("st6",),  # ST <= 4.1 write 0_StaticEmbedding/, which every version reads
        needs_weights=True,
        required_files=("tokenizer.json",),
        reads="text",
        since="3.2",
        path_keys=("tokenizer",),
        example=({"type": "StaticEmbedding", "tokenizer": "{tiny_bert}", "embedding_dim": 16}, {"type": "Normalize"}),
    )
)
