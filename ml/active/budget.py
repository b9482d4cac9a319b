"""The budget: how many samples get a human mask, as a share of the training data or a count.

Pure Python (no numpy, no torch): the web process validates round budgets with it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """How many rows to select: ``fraction`` of the training data (default 3%) or an absolute ``count``.

    The one budget type of the project: the round workflow (per round and in total), both scoring paths
    and the mask-budget experiment (``ml.experiments``) resolve their budgets here.
    """

    fraction: float | None = 0.03
    count: int | None = None

    def __post_init__(self):
        if self.count is not None:
            if int(self.count) < 0:
                raise ValueError(f"budget count must be >= 0, got {self.count}")
        elif self.fraction is None or not 0 < float(self.fraction) <= 1:
            raise ValueError(f"budget fraction must be in (0, 1], got {self.fraction}")

    def resolve(self, pool_size: int, training_size: int | None = None) -> int:
        """Rows to take from a pool of ``pool_size``: ``count``, or ``fraction`` of ``training_size`` (what
        the fraction is quoted against, e.g. every training image of which the pool is the unlabeled
        fakes; default the pool itself). Never more than the pool; a fraction takes at least one row of
        a non-empty pool, and the fraction 1 takes all of it."""
        if self.count is not None:
            return min(int(self.count), pool_size)
        if float(self.fraction) >= 1:
            return pool_size
        base = pool_size if training_size is None else training_size
        # ceil would turn 0.03 x 10 into 1 of 10 = 10%; round keeps the fraction honest but >= 1 row.
        return min(pool_size, max(1, int(round(float(self.fraction) * base)))) if pool_size else 0

    @classmethod
    def parse(cls, value: str | float | int, *, counts: bool = True) -> Budget:
        """'3%' or 0.03 -> fraction; an int >= 1 (or '150') -> count. With ``counts=False`` every number
        is a fraction ('1' = 100%) and 0 is no rows, as the mask-budget experiment quotes its budgets."""
        text = str(value).strip()
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        if not counts:
            return cls(fraction=None, count=0) if number == 0 else cls(fraction=number)
        if not text.endswith("%") and number >= 1 and number.is_integer() and "." not in text:
            return cls(fraction=None, count=int(number))
        return cls(fraction=number)
