"""A tiny counter-based random stream: (seed, index) -> the same draws everywhere.

SplitMix64 (Steele, Lea & Flood 2014) in pure Python integers. It depends on no
library's generator, whose streams may change between versions, so a toy-world
sample is fixed by its seed and index forever, on any machine.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class Stream:
    """Uniform floats and choices from the stream keyed by (seed, index)."""

    __slots__ = ("_state",)

    def __init__(self, seed: int, index: int, salt: int = 0):
        self._state = _mix(_mix(_mix(seed & _MASK) ^ (index & _MASK)) ^ (salt & _MASK))

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        return _mix(self._state)

    def random(self) -> float:
        """Uniform in [0, 1), 53 bits."""
        return (self._next() >> 11) * (1.0 / (1 << 53))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def below(self, n: int) -> int:
        return (self._next() * n) >> 64

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def weighted(self, options: dict):
        """A key of `options` drawn with probability proportional to its value."""
        r = self.random() * sum(options.values())
        for key, weight in options.items():
            r -= weight
            if r < 0:
                return key
        return key
