"""The streaming forecaster's window: the last look-back readings in a fixed
float32 array, written in place, read out in time order."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence


class RingBuffer:
    """The last `capacity` rows of `width` float32 values, oldest first on read."""

    def __init__(self, capacity: int, width: int) -> None:
        self._data = np.zeros((capacity, width), dtype=np.float32)
        self._start = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    @property
    def full(self) -> bool:
        return self._size == self.capacity

    def __len__(self) -> int:
        return self._size

    def append(self, row: np.ndarray | Sequence[float]) -> None:
        self._data[(self._start + self._size) % self.capacity] = row
        if self.full:
            self._start = (self._start + 1) % self.capacity
        else:
            self._size += 1

    def clear(self) -> None:
        self._start = 0
        self._size = 0

    def last(self) -> Optional[np.ndarray]:
        if not self._size:
            return None
        return self._data[(self._start + self._size - 1) % self.capacity].copy()

    def window(self) -> np.ndarray:
        """The rows in time order, as a fresh C-contiguous array."""
        order = (self._start + np.arange(self._size)) % self.capacity
        return self._data[order]

    def rows(self) -> List[List[Optional[float]]]:
        """JSON-ready rows: None where a neighbour's reading is missing (NaN)."""
        return [[float(v) if v == v else None for v in row] for row in self.window()]

    def copy(self) -> "RingBuffer":
        twin = RingBuffer(*self._data.shape)
        twin._data[:] = self._data
        twin._start, twin._size = self._start, self._size
        return twin

    @classmethod
    def from_rows(cls, rows: np.ndarray | Sequence[Sequence[float]], capacity: int, width: int) -> "RingBuffer":
        buffer = cls(capacity, width)
        for row in rows[-capacity:]:
            buffer.append(row)
        return buffer
