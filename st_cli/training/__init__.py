"""Fine-tuning the modules a recipe added: distillation, contrastive pairs, PCA init, checkpoints.

Named `training`, not `train`: a subpackage `st_cli.train` would shadow the public function `st_cli.train`.
"""
