"""Drawing a random seed: one function for every style. Each style's range is data in its own package (A1111
draws below 2³²−1, Stability from 1 so that 0 can mean "random", ModelsLab below 2³²−1)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRange:
    """The seeds a style draws from, both ends included."""

    low: int
    high: int

    def draw(self, images: int = 1, rng: random.Random | None = None) -> int:
        """A random seed that leaves room for `images` consecutive seeds (image i uses seed + i) in range."""
        return (rng or random).randint(self.low, self.high - max(0, images - 1))

    def pick(self, seed: int | None, images: int = 1, *, random_below: int = 0) -> int:
        """`seed` as sent, or a drawn one when it is None or below `random_below` (-1 and 0 mean random)."""
        if seed is None or int(seed) < random_below:
            return self.draw(images)
        return int(seed)
