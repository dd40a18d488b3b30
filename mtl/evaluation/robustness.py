"""Perturbed copies of labeled rows: how much a metric drops when the input is noisier than the
eval set. Each perturbation keeps the gold answer valid: tagging rows keep one tag per token.

- ``typos``: in about one word in ten of four letters or more, two neighbouring letters swapped,
  a letter dropped or a letter doubled;
- ``lowercase``: everything lower-cased;
- ``punctuation``: punctuation removed (tagging: tokens that are only punctuation and tagged ``O``
  dropped, with their tags).

Deterministic: the same rows and seed give the same perturbed rows.
"""

from __future__ import annotations

import random
import string

from mtl.tasks import OUTSIDE

PERTURBATIONS = ("typos", "lowercase", "punctuation")
TYPO_RATE = 0.1
_PUNCTUATION = set(string.punctuation) | set("“”‘’«»…–—")


def perturb_rows(rows: list[dict], kind: str, perturbation: str, *, seed: int) -> list[dict]:
    """``rows`` with their text (``text`` and ``pair`` for pairs, ``tokens`` for tagging) perturbed."""
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation {perturbation!r}: choose from {', '.join(PERTURBATIONS)}")
    rng = random.Random(f"{seed}:{perturbation}")
    if kind == "tagging":
        return [_perturb_tagged(row, perturbation, rng) for row in rows]
    fields = ("text", "pair") if kind == "similarity" else ("text",)
    return [{**row, **{name: _perturb_text(row[name], perturbation, rng) for name in fields}} for row in rows]


def _perturb_text(text: str, perturbation: str, rng: random.Random) -> str:
    if perturbation == "lowercase":
        return text.lower()
    if perturbation == "punctuation":
        stripped = " ".join("".join(c for c in text if c not in _PUNCTUATION).split())
        return stripped or text
    return " ".join(_typo(word, rng) for word in text.split(" "))


def _perturb_tagged(row: dict, perturbation: str, rng: random.Random) -> dict:
    tokens, tags = row["tokens"], row["tags"]
    if perturbation == "lowercase":
        return {**row, "tokens": [token.lower() for token in tokens]}
    if perturbation == "typos":
        return {**row, "tokens": [_typo(token, rng) for token in tokens]}
    kept = [(token, tag) for token, tag in zip(tokens, tags)
            if tag != OUTSIDE or not all(character in _PUNCTUATION for character in token)]
    if not kept:
        return row
    return {**row, "tokens": [token for token, _ in kept], "tags": [tag for _, tag in kept]}


def _typo(word: str, rng: random.Random) -> str:
    """``word``, or (for one word in ten of 4+ letters) it with one keyboard slip."""
    if len(word) < 4 or not word.isalpha() or rng.random() >= TYPO_RATE:
        return word
    position = rng.randrange(1, len(word) - 1)
    slip = rng.choice(("swap", "drop", "double"))
    if slip == "swap":
        return word[:position] + word[position + 1] + word[position] + word[position + 2:]
    if slip == "drop":
        return word[:position] + word[position + 1:]
    return word[:position] + word[position] + word[position:]
