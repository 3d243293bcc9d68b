"""Run inside one sentence-transformers venv (>= 5.0): save the three kinds of SparseEncoder folder from a tiny
BertForMaskedLM and a tiny BERT, the way a user of that version would.

usage: python save_sparse.py MLM_FOLDER BERT_FOLDER OUT_FOLDER

Writes OUT/splade (MLMTransformer + SpladePooling), OUT/splade_default (SparseEncoder(MLM_FOLDER): ST >= 5.4
save it as a fill-mask Transformer), OUT/splade_sum (sum pooling, log1p_relu), OUT/ifree (a Router: query →
SparseStaticEmbedding with random weights, document → MLMTransformer + SpladePooling) and OUT/csr (Transformer +
Pooling + SparseAutoEncoder, random weights). Tokenizer files are made readable by transformers 4.x first.
"""

import shutil
import sys
from pathlib import Path

import torch
from sentence_transformers import SparseEncoder
from sentence_transformers.sparse_encoder.models import (
    MLMTransformer,
    SparseAutoEncoder,
    SparseStaticEmbedding,
    SpladePooling,
)

try:  # ST >= 5.4
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:  # ST 5.0-5.3
    from sentence_transformers.models import Pooling, Router, Transformer


def portable_copy(folder: Path, out: Path) -> Path:
    target = out / f"_{folder.name}"
    shutil.copytree(folder, target, dirs_exist_ok=True)
    config = target / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"TokenizersBackend"', '"PreTrainedTokenizerFast"'))
    return target


def main() -> None:
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    mlm, bert = portable_copy(Path(sys.argv[1]), out), portable_copy(Path(sys.argv[2]), out)
    torch.manual_seed(0)
    SparseEncoder(modules=[MLMTransformer(str(mlm)), SpladePooling("max")]).save(str(out / "splade"))
    SparseEncoder(str(mlm)).save(str(out / "splade_default"))
    sum_pooling = SpladePooling("sum", activation_function="log1p_relu")
    SparseEncoder(modules=[MLMTransformer(str(mlm)), sum_pooling]).save(str(out / "splade_sum"))
    document = [MLMTransformer(str(mlm)), SpladePooling("max")]
    query = SparseStaticEmbedding(tokenizer=document[0].tokenizer)
    with torch.no_grad():
        query.weight.uniform_(0.0, 3.0)
    router = Router.for_query_document(query_modules=[query], document_modules=document)
    SparseEncoder(modules=[router], similarity_fn_name="dot").save(str(out / "ifree"))
    sae = SparseAutoEncoder(input_dim=32, hidden_dim=64, k=8, k_aux=16)
    with torch.no_grad():
        sae.pre_bias.uniform_(-0.1, 0.1)
        sae.latent_bias.uniform_(-0.1, 0.1)
    SparseEncoder(modules=[Transformer(str(bert)), Pooling(32, "mean"), sae]).save(str(out / "csr"))


if __name__ == "__main__":
    main()
