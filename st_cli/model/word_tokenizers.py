"""The word tokenizers sentence-transformers saves beside a WordEmbeddings module, in plain Python.

`WhitespaceTokenizer` splits on whitespace; `PhraseTokenizer` splits like nltk's `word_tokenize`
(with `preserve_line=True`) and merges vocabulary phrases such as `New_York`. Both map words to
vocabulary indices and drop stop words, in sentence-transformers' order of fallbacks, so ids are
identical to its own. Torch-free; nltk is not needed (its word tokenizer is reproduced below).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from typing import Any

from st_cli.format.specs.word_embeddings import WORD_TOKENIZERS

# sentence-transformers' default stop words (punctuation plus scikit-learn's English list).
ENGLISH_STOP_WORDS: tuple[str, ...] = tuple(
    (
        "! \" '' `` # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \\ ] ^ _ ` { | } ~ a about above across after "
        "afterwards again against ain all almost alone along already also although always am among amongst "
        "amoungst amount an and another any anyhow anyone anything anyway anywhere are aren around as at back be "
        "became because become becomes becoming been before beforehand behind being below beside besides between "
        "beyond bill both bottom but by call can cannot cant co con could couldn couldnt cry d de describe detail "
        "did didn do does doesn doing don done down due during each eg eight either eleven else elsewhere empty "
        "enough etc even ever every everyone everything everywhere except few fifteen fifty fill find fire first "
        "five for former formerly forty found four from front full further get give go had hadn has hasn hasnt "
        "have haven having he hence her here hereafter hereby herein hereupon hers herself him himself his how "
        "however hundred i ie if in inc indeed interest into is isn it its itself just keep last latter latterly "
        "least less ll ltd m ma made many may me meanwhile might mightn mill mine more moreover most mostly move "
        "much must mustn my myself name namely needn neither never nevertheless next nine no nobody none noone "
        "nor not nothing now nowhere o of off often on once one only onto or other others otherwise our ours "
        "ourselves out over own part per perhaps please put rather re s same see seem seemed seeming seems "
        "serious several shan she should shouldn show side since sincere six sixty so some somehow someone "
        "something sometime sometimes somewhere still such system t take ten than that the their theirs them "
        "themselves then thence there thereafter thereby therefore therein thereupon these they thick thin third "
        "this those though three through throughout thru thus to together too top toward towards twelve twenty "
        "two un under until up upon us ve very via was wasn we well were weren what whatever when whence whenever "
        "where whereafter whereas whereby wherein whereupon wherever whether which while whither who whoever "
        "whole whom whose why will with within without won would wouldn y yet you your yours yourself yourselves "
    ).split()
)
# Each word is looked up as written, then as a fallback; which fallback comes first differs by tokenizer.
_STRIP_THEN_LOWER = ("strip", "lower")
_LOWER_THEN_STRIP = ("lower", "strip")


class WordTokenizer:
    """Words to vocabulary ids: a word, or its fallbacks, found in the vocabulary; stop words dropped."""

    kind = ""  # the WORD_TOKENIZERS key
    fallbacks: tuple[str, ...] = _STRIP_THEN_LOWER

    def __init__(
        self, vocab: Sequence[str] = (), stop_words: Iterable[str] = ENGLISH_STOP_WORDS, do_lower_case: bool = False
    ) -> None:
        self.vocab = list(vocab)
        self.stop_words = set(stop_words)
        self.do_lower_case = do_lower_case
        self.word2idx: dict[str, int] = {}
        for index, word in enumerate(self.vocab):
            self.word2idx[word] = index  # a repeated word keeps its last index, as ST's OrderedDict does

    def words(self, text: str) -> list[str]:
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for word in self.words(text):
            index = self._lookup(word)
            if index is not None:
                ids.append(index)
        return ids

    def _lookup(self, word: str) -> int | None:
        """The first of word, then its fallbacks, that is a stop word (dropped: None) or in the vocabulary."""
        for step in ("as is", *self.fallbacks):
            if step == "strip":
                word = word.strip(string.punctuation)
            elif step == "lower":
                word = word.lower()
            if word in self.stop_words:
                return None
            # ST skips an empty word only right after stripping (a vocabulary may hold "").
            if word in self.word2idx and (word or step != "strip"):
                return self.word2idx[word]
        return None

    def config(self) -> dict[str, Any]:
        """The tokenizer's config file content, as sentence-transformers writes it."""
        return {"vocab": list(self.vocab), "stop_words": sorted(self.stop_words), "do_lower_case": self.do_lower_case}


class WhitespaceTokenizer(WordTokenizer):
    kind = "WhitespaceTokenizer"

    def words(self, text: str) -> list[str]:
        return (text.lower() if self.do_lower_case else text).split()


class PhraseTokenizer(WordTokenizer):
    """nltk-style words, then vocabulary n-grams (`New_York`) merged into one token, longest first.

    Like sentence-transformers, it ignores `do_lower_case` (it only stores it).
    """

    kind = "PhraseTokenizer"
    fallbacks = _LOWER_THEN_STRIP

    def __init__(
        self,
        vocab: Sequence[str] = (),
        stop_words: Iterable[str] = ENGLISH_STOP_WORDS,
        do_lower_case: bool = False,
        ngram_separator: str = "_",
        max_ngram_length: int = 5,
    ) -> None:
        super().__init__(vocab, stop_words, do_lower_case)
        self.ngram_separator, self.max_ngram_length = ngram_separator, max_ngram_length
        self.ngram_lookup: set[str] = set()
        self.ngram_lengths: set[int] = set()
        separator = ngram_separator
        for word in self.vocab:
            if separator and separator in word and separator * 2 not in word:
                length = word.count(separator) + 1
                if length <= max_ngram_length:
                    self.ngram_lookup.add(word)
                    self.ngram_lengths.add(length)

    def words(self, text: str) -> list[str]:
        tokens = nltk_word_tokenize(text)
        for length in sorted(self.ngram_lengths, reverse=True):
            i = 0
            while i <= len(tokens) - length:
                ngram = self.ngram_separator.join(tokens[i : i + length])
                if ngram in self.ngram_lookup:
                    tokens[i : i + length] = [ngram]
                elif ngram.lower() in self.ngram_lookup:
                    tokens[i : i + length] = [ngram.lower()]
                i += 1
        return tokens

    def config(self) -> dict[str, Any]:
        return super().config() | {"ngram_separator": self.ngram_separator, "max_ngram_length": self.max_ngram_length}


TOKENIZER_CLASSES: dict[str, type[WordTokenizer]] = {c.kind: c for c in (WhitespaceTokenizer, PhraseTokenizer)}
assert set(TOKENIZER_CLASSES) == set(WORD_TOKENIZERS), "specs/word_embeddings.py and this file must list the same"


def make_tokenizer(kind: str, **config: Any) -> WordTokenizer:
    return TOKENIZER_CLASSES[kind](**config)


# ---------------------------------------------------------------- nltk's word_tokenize(text, preserve_line=True)
# The rules of nltk 3.x's NLTKWordTokenizer (an improved Penn Treebank tokenizer), applied in its order.

_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = [
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
]


def nltk_word_tokenize(text: str) -> list[str]:
    """nltk.word_tokenize(text, preserve_line=True), which PhraseTokenizer calls."""
    for pattern, replacement in (*_STARTING_QUOTES, *_PUNCTUATION, _PARENS_BRACKETS, _DOUBLE_DASHES):
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _ENDING_QUOTES:
        text = pattern.sub(replacement, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()
