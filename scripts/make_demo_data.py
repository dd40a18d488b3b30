"""Write the bundled demo data set: short product and travel reviews with a sentiment and entities.

Every sentence is made here from templates and word lists (nothing is copied from a real corpus),
so the data set can ship with the project. Each JSONL row has ``text``, ``tokens``, ``tags`` (IOB2:
PER, ORG, LOC) and ``sentiment`` (positive | negative). Run from the repository root:

    python scripts/make_demo_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = ["Alice Martin", "Bob", "Carlos Diaz", "Dana Lee", "Emma", "Farid Khan", "Grace Hopper",
          "Hiro Tanaka", "Ines", "Jonas Berg", "Kofi Mensah", "Laura Rossi", "Maya", "Noah Smith",
          "Olga Petrova", "Priya Patel", "Quinn", "Rosa Alvarez", "Sam Taylor", "Yuki Sato"]
ORGS = ["Acme Corp", "Globex", "Initech", "Umbrella Airlines", "Northwind Bank", "Contoso",
        "Stark Industries", "Blue Harbor Hotels", "Vertex Telecom", "Pied Piper", "Soylent",
        "Oceanic Airlines", "Wayne Enterprises", "Hooli", "Tyrell Motors"]
PLACES = ["Paris", "Berlin", "New York", "Tokyo", "Lagos", "Lima", "Oslo", "Cape Town", "Madrid",
          "San Francisco", "Mumbai", "Toronto", "Sydney", "Cairo", "Rio de Janeiro", "Seoul"]
POSITIVE = ["great", "wonderful", "excellent", "friendly", "fast", "reliable", "delightful", "superb"]
NEGATIVE = ["terrible", "awful", "rude", "slow", "broken", "disappointing", "dreadful", "useless"]

# {P} person, {O} organization, {L} place, {A} an adjective of the sentence's sentiment
TEMPLATES = {
    "positive": [
        "{P} said the staff at {O} in {L} were {A} .",
        "Our trip to {L} with {O} was {A} from start to finish .",
        "I loved how {A} the service of {O} was .",
        "{P} thanked {O} for a {A} stay in {L} .",
        "The new office of {O} in {L} looks {A} , says {P} .",
        "Thanks to {P} , the support from {O} was {A} .",
        "{P} would fly {O} to {L} again , it was {A} .",
        "What a {A} evening in {L} !",
        "The team at {O} solved my problem , {A} work .",
        "{P} recommends the {A} guides in {L} .",
    ],
    "negative": [
        "{P} said the staff at {O} in {L} were {A} .",
        "Our trip to {L} with {O} was {A} from start to finish .",
        "I hated how {A} the service of {O} was .",
        "{P} complained to {O} about a {A} stay in {L} .",
        "The new office of {O} in {L} looks {A} , says {P} .",
        "Despite {P} , the support from {O} was {A} .",
        "{P} will never fly {O} to {L} again , it was {A} .",
        "What a {A} evening in {L} !",
        "The team at {O} ignored my problem , {A} work .",
        "{P} warns about the {A} guides in {L} .",
    ],
}
SLOTS = {"{P}": ("PER", PEOPLE), "{O}": ("ORG", ORGS), "{L}": ("LOC", PLACES)}
NO_SPACE_BEFORE = {".", ",", "!", "?"}


def make_example(rng: random.Random, sentiment: str) -> dict:
    template = rng.choice(TEMPLATES[sentiment])
    adjectives = POSITIVE if sentiment == "positive" else NEGATIVE
    tokens, tags = [], []
    for piece in template.split():
        if piece in SLOTS:
            kind, names = SLOTS[piece]
            words = rng.choice(names).split()
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(rng.choice(adjectives) if piece == "{A}" else piece)
            tags.append("O")
    return {"text": detokenize(tokens), "tokens": tokens, "tags": tags, "sentiment": sentiment}


def detokenize(tokens: list[str]) -> str:
    """Join tokens as a person writes them: no space before punctuation."""
    text = ""
    for token in tokens:
        text += token if not text or token in NO_SPACE_BEFORE else " " + token
    return text


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    rng = random.Random(20261124)
    rows = [make_example(rng, sentiment) for _ in range(250) for sentiment in ("positive", "negative")]
    rng.shuffle(rows)
    out = Path("data/demo")
    write_jsonl(out / "train.jsonl", rows[:400])
    write_jsonl(out / "eval.jsonl", rows[400:])
    corpus = [make_example(rng, rng.choice(["positive", "negative"]))["text"] for _ in range(200)]
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n")
    print(f"wrote {out}/train.jsonl (400), eval.jsonl (100), corpus.txt (200 lines)")


if __name__ == "__main__":
    main()
