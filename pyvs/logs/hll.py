"""HyperLogLog: how many distinct clients, without keeping a list of them.

Theory of operation
-------------------
Each client address is hashed to 64 bits (BLAKE2b, keyed by nothing: the same in
every worker and every run, so sketches from several workers merge). The first
``p`` bits choose one of ``m = 2**p`` registers; the register keeps the largest
"rank" seen there, the position of the first 1 bit in the remaining ``64 - p`` bits.
Many distinct values make long runs of zeros likely, so the registers' harmonic mean
estimates the count (Flajolet et al., 2007), with the small-range correction
(linear counting while registers are still empty) of Heule et al., 2013.
With ``p = 12`` (4 KiB) the standard error is about 1.04 / sqrt(4096) = 1.6 %.

Merging two sketches is the register-wise maximum, so workers ship only the
registers that grew since their last report (:meth:`HyperLogLog.take_changes`) and
the supervisor folds them in; the same changes feed an hour's and a day's sketch.
Nothing here can give back an address.
"""

from __future__ import annotations

import math
from hashlib import blake2b

P = 12
M = 1 << P


def hash64(value: bytes) -> int:
    return int.from_bytes(blake2b(value, digest_size=8).digest(), "big")


class HyperLogLog:
    """A sketch of 2**12 one-byte registers."""

    __slots__ = ("changed", "registers")

    def __init__(self) -> None:
        self.registers = bytearray(M)
        self.changed: dict[int, int] = {}  # register -> rank, since take_changes

    def add(self, value: bytes) -> None:
        self.add_hash(hash64(value))

    def add_hash(self, h: int) -> None:
        idx = h >> (64 - P)
        rest = h & ((1 << (64 - P)) - 1)
        rank = (64 - P) - rest.bit_length() + 1
        if rank > self.registers[idx]:
            self.registers[idx] = rank
            self.changed[idx] = rank

    def take_changes(self) -> dict[int, int]:
        out, self.changed = self.changed, {}
        return out

    def merge_changes(self, changes: dict[int, int] | dict[str, int]) -> None:
        regs = self.registers
        for k, rank in changes.items():
            i = int(k)
            if 0 <= i < M and rank > regs[i]:
                regs[i] = min(int(rank), 64)

    def merge(self, other: HyperLogLog) -> None:
        regs = self.registers
        for i, r in enumerate(other.registers):
            if r > regs[i]:
                regs[i] = r

    def count(self) -> int:
        regs = self.registers
        zeros = regs.count(0)
        if zeros == M:
            return 0
        alpha = 0.7213 / (1 + 1.079 / M)
        raw = alpha * M * M / sum(2.0 ** -r for r in regs)
        if raw <= 2.5 * M and zeros:
            return round(M * math.log(M / zeros))  # linear counting: accurate while sparse
        return round(raw)
