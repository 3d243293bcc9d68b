"""TaskTransformer: st's Transformer whose output depends on an encode-time `task` keyword.

`task` picks the hidden layer the token embeddings come from: the last one by default and for
"retrieval", the one before it for "clustering" (lower layers keep more surface similarity). The
recipe declares `kwargs: [task]`, which st writes to modules.json, so both st and
sentence-transformers pass `encode(..., task=...)` to this module's forward and to no other.
"""

from typing import Any, ClassVar

from torch import Tensor

from st_cli.model.modules.transformer import Transformer

TASK_LAYERS: dict[str, int] = {"retrieval": -1, "clustering": -2}  # index into hidden_states


class TaskTransformer(Transformer):
    tasks: ClassVar[dict[str, int]] = TASK_LAYERS

    def forward(self, features: dict[str, Tensor], task: str | None = None, **kwargs: Any) -> dict[str, Tensor]:
        layer = self.tasks.get(task or "retrieval")
        if layer is None:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(self.tasks)}")
        if layer == -1:
            return super().forward(features)
        inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
        output = self.auto_model(**inputs, output_hidden_states=True, return_dict=True)
        features["token_embeddings"] = output.hidden_states[layer]
        return features
