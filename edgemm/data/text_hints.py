"""Short text about a digit, as a noisy side channel would give it.

Hints range from exact ("the digit seven") to vague ("an odd number") to
useless ("no comment"), so text alone cannot solve the task but narrows it.
"""
from __future__ import annotations

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NOISE = ["no comment", "see attached", "label unclear", "reading follows", "sensor note", ""]


def _exact(d: int, rng: np.random.Generator) -> str:
    return str(rng.choice([f"the digit {WORDS[d]}", f"{WORDS[d]}", f"number {WORDS[d]}",
                           f"it reads {WORDS[d]}"]))


def _neighbour(d: int, rng: np.random.Generator) -> str:
    if d < 9 and (d == 0 or rng.random() < 0.5):
        return f"one less than {WORDS[d + 1]}"
    return f"one more than {WORDS[d - 1]}"


def _parity(d: int, rng: np.random.Generator) -> str:
    return "an even number" if d % 2 == 0 else "an odd number"


def _range(d: int, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return "smaller than five" if d < 5 else "at least five"
    pivot = int(rng.integers(1, 9))
    return f"below {WORDS[pivot]}" if d < pivot else f"not below {WORDS[pivot]}"


def _parity_range(d: int, rng: np.random.Generator) -> str:
    size = "small" if d < 5 else "large"
    return f"a {size} {'even' if d % 2 == 0 else 'odd'} number"


def _noise(d: int, rng: np.random.Generator) -> str:
    return str(rng.choice(NOISE))


HINTS = [(_exact, 0.15), (_neighbour, 0.10), (_parity, 0.2), (_range, 0.2), (_parity_range, 0.15), (_noise, 0.2)]


def hint(digit: int, rng: np.random.Generator) -> str:
    kinds, weights = zip(*HINTS)
    return kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))](digit, rng)


def vocabulary() -> list[str]:
    phrases = ["the digit it reads number one less than more an even odd smaller at least below not a small "
               "large"] + NOISE + WORDS
    return sorted({w for p in phrases for w in p.split()})
