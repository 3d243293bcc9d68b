"""`--init pca`: a narrowing Dense starts at the top principal directions of its inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.training.train import TrainingJob


# Dense activations a PCA init suits, with the typical size of a projected input that keeps the
# activation near-linear (tanh(x) ≈ x for small x; a Normalize after it drops the scale again).
# None: leave the projection unscaled.
PCA_ACTIVATIONS: dict[str, float | None] = {
    "torch.nn.modules.linear.Identity": None,
    "torch.nn.modules.activation.Tanh": 0.5,
}


def pca_unsuitable(job: TrainingJob) -> str | None:
    """Why PCA cannot initialise the first trained module (None: it can)."""
    import torch

    index = job.options.trained[0]
    dense = job.model.steps[index]
    linear = getattr(dense, "linear", None)
    narrowing = isinstance(linear, torch.nn.Linear) and linear.out_features < linear.in_features
    if getattr(dense, "type_name", None) != "Dense" or not narrowing or not job.cache.enabled:
        return f"module {index} ({type(dense).__name__}) is not a narrowing Dense after frozen modules"
    activation = getattr(dense, "activation", None)
    if activation not in PCA_ACTIVATIONS:
        return f"module {index} uses activation {activation}; PCA suits identity or tanh"
    return None


def describe(job: TrainingJob) -> str:
    """`module 2 (Dense 384→128)`: what the init is about."""
    index = job.options.trained[0]
    linear = getattr(job.model.steps[index], "linear", None)
    shape = f" {linear.in_features}→{linear.out_features}" if linear is not None else ""
    return f"module {index} ({type(job.model.steps[index]).__name__}{shape})"


def pca_init(job: TrainingJob) -> int:
    """Set the first trained module, a narrowing Dense, to the top principal directions of its inputs.

    Uncentred: the directions of largest mean square, so cosines between embeddings survive the
    projection (centring first measured 0.84 Spearman against 0.98 on MiniLM → 128). Rows are
    L2-normalised so every text counts the same. Returns the module's index.
    """
    import torch

    problem = pca_unsuitable(job)
    if problem is not None:
        raise StError(f"--init pca: {problem}")
    index = job.options.trained[0]
    dense = job.model.steps[index]
    activation = getattr(dense, "activation", None)
    linear = getattr(dense, "linear", None)
    assert isinstance(linear, torch.nn.Linear)
    texts = job.train_texts if job.options.loss == "distill" else [p.anchor for p in job.train_pairs]
    raw = torch.stack([job.cache.rows[t]["sentence_embedding"] for t in texts]).double()
    inputs = torch.nn.functional.normalize(raw, dim=-1)
    _, vectors = torch.linalg.eigh(inputs.T @ inputs)  # ascending eigenvalues
    top = vectors[:, -linear.out_features :].flip(1).T
    size = PCA_ACTIVATIONS[str(activation)]
    scale = 1.0 if size is None else size / float(raw.norm(dim=-1).median())
    with torch.no_grad():
        linear.weight.copy_((top * scale).to(linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.zero_()
    return index
