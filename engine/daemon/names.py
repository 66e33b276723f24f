"""Generated container names in Docker's ``adjective_surname`` style.

The surnames are people who shaped computing and science; the word lists
are our own. Like Docker, a clash gets a random digit appended on retry.
"""

from __future__ import annotations

import random

ADJECTIVES = (
    "agile", "amazing", "awesome", "bold", "brave", "bright", "busy", "calm", "careful", "charming",
    "cheerful", "clever", "cool", "curious", "daring", "dazzling", "determined", "eager", "earnest",
    "elastic", "elated", "elegant", "epic", "fervent", "festive", "fierce", "focused", "friendly", "frosty",
    "gallant", "gentle", "gifted", "glowing", "graceful", "happy", "hardy", "hopeful", "humble", "jolly",
    "keen", "kind", "lively", "loving", "lucid", "magical", "merry", "mighty", "modest", "nervous",
    "nifty", "noble", "optimistic", "patient", "peaceful", "pensive", "polite", "proud", "quick", "quiet",
    "relaxed", "resolute", "serene", "sharp", "silly", "sleepy", "smart", "stoic", "sturdy", "sweet",
    "tender", "thirsty", "tidy", "trusting", "upbeat", "vibrant", "vigilant", "vigorous", "wise", "witty",
    "wonderful", "youthful", "zealous", "zen",
)

SURNAMES = (
    "allen", "babbage", "backus", "bardeen", "bartik", "berners_lee", "bohr", "boole", "brattain", "cerf",
    "chandrasekhar", "codd", "conway", "corbato", "curie", "darwin", "dijkstra", "einstein", "engelbart",
    "euler", "faraday", "feynman", "fermi", "gauss", "goldberg", "goodall", "hamilton", "hawking", "hodgkin",
    "hopper", "hypatia", "johnson", "kahan", "kay", "kepler", "knuth", "lamarr", "lamport", "liskov",
    "lovelace", "maxwell", "mccarthy", "meitner", "minsky", "mirzakhani", "morse", "newton", "noether",
    "pascal", "pike", "raman", "ritchie", "rosalind", "shannon", "shockley", "sinoussi", "stallman",
    "sutherland", "tesla", "thompson", "torvalds", "turing", "volhard", "vonneumann", "wiles", "wilkes",
    "wing", "wozniak", "wright", "yalow", "yonath",
)


def random_name(retry: int = 0, rng: random.Random | None = None) -> str:
    """``adjective_surname``; from the second try on, a digit is appended."""
    rng = rng or random.SystemRandom()
    name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
    if retry > 0:
        name += str(rng.randint(0, 9))
    return name
