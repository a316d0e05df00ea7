"""Deterministic hashing, derived seeds, MPIDs and UUID-shaped ids."""

from __future__ import annotations

import random

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
_TWO63 = 1 << 63
_TWO64 = 1 << 64
_UNIT = 2.0**-53


def splitmix64(x: int) -> int:
    """The splitmix64 finaliser: a fast, well-mixed 64-bit hash."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key(*parts: int) -> int:
    """Combine integers (any sign) into one 64-bit key."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = splitmix64(h ^ (p & M64))
    return h


def unit(*parts: int) -> float:
    """A uniform float in [0, 1) determined by the parts."""
    return (key(*parts) >> 11) * _UNIT


def rng_for(*parts: int) -> random.Random:
    """A `random.Random` seeded from the parts."""
    return random.Random(key(*parts))


def uuid_from(rng: random.Random) -> str:
    """A random version-4-shaped UUID string drawn from `rng`."""
    s = f"{rng.getrandbits(128):032x}"
    return f"{s[:8]}-{s[8:12]}-4{s[13:16]}-a{s[17:20]}-{s[20:]}"


def _round(x: int, k: int) -> int:
    x = ((x ^ k) * 0x9E3779B1) & M32
    x ^= x >> 15
    x = (x * 0x85EBCA6B) & M32
    return x ^ (x >> 13)


class MpidSpace:
    """A seeded bijection from user numbers to non-zero signed 64-bit MPIDs (never colliding)."""

    __slots__ = ("_keys",)

    def __init__(self, seed: int) -> None:
        rng = random.Random(key(seed, 0x4D504944))
        self._keys = tuple(rng.getrandbits(32) for _ in range(4))

    def _permute(self, x: int) -> int:
        hi, lo = x >> 32, x & M32
        for k in self._keys:
            hi, lo = lo, hi ^ _round(lo, k)
        return (hi << 32) | lo

    def mpid(self, index: int) -> int:
        """The MPID of user number `index` (0-based)."""
        if not 0 <= index < M64:
            raise ValueError("user index out of range")
        v = self._permute(index + 1)
        while v == 0:  # cycle-walk past zero: still a bijection on the non-zero values
            v = self._permute(v)
        return v - _TWO64 if v >= _TWO63 else v
