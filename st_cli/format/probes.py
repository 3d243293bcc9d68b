"""The fixed probe texts whose embeddings st_manifest.json records, for `st verify`."""

from __future__ import annotations

PROBE_ATOL = 1e-5

# Varied on purpose: empty, whitespace, casing, unicode, CJK, emoji, code, numbers, a long text.
PROBE_TEXTS = [
    "A man is eating food.",
    "",
    "  leading and trailing whitespace\t ",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "Ünïcödé façade naïve café — «quotes»",
    "机器学习正在改变世界。",
    "Emoji 🚀🔥 are tokens too 👍",
    "def add(a, b):\n    return a + b",
    "3.14159 is approximately pi; 2^10 = 1024.",
    "Sentence embeddings map text to vectors so that similar meanings lie close together. " * 40,
]
