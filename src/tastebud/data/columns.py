"""Fixed column names used across tastebud (the RecTools convention: one set of names)."""

from __future__ import annotations

from typing import Final

USER: Final = "user"
ITEM: Final = "item"
RATING: Final = "rating"
WEIGHT: Final = "weight"
TIMESTAMP: Final = "timestamp"
SCORE: Final = "score"
RANK: Final = "rank"
