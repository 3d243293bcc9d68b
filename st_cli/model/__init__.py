"""The module stack in torch: the registry (name ↔ class), trusted code loading, recipes, the Model,
st's own BERT and the numpy path for static models, and `modules/` (one torch file per module type)."""
