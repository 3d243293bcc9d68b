"""Files on disk, without torch: the module type specs, the folder layout and its dialects, the manifest,
hub/path resolution and the torch-free summary behind `st inspect`.

Nothing in this package imports torch or transformers (the import contract in pyproject.toml says so).
"""
