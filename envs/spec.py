"""Names and sizes shared by every layer: the behaviour order and the observation layout.

These are the contracts of DESIGN.md: feedback is float32 `(B, S, F)` in `FEEDBACK_FIELDS`
order; an observation is a dict of the four pathways below; item id -1 is a blank/padding.
"""

from __future__ import annotations

# Binary behaviours of a shown item, in a fixed order (P-score towers follow it).
BEHAVIOURS: tuple[str, ...] = (
    "click", "long_view", "like", "follow", "comment", "forward", "hate",
)

# Per-item feedback vector F: watch time (seconds), watch ratio (watch time / duration,
# capped at 3) and the binary behaviours.
FEEDBACK_FIELDS: tuple[str, ...] = ("watch_time", "watch_ratio", *BEHAVIOURS)
NUM_FEEDBACK = len(FEEDBACK_FIELDS)

# The static pathway: one token of categorical user features, with their cardinalities.
STATIC_FIELDS: tuple[str, ...] = ("user_bucket", "age_group", "gender", "region", "activity_level")
STATIC_CARDINALITIES: tuple[int, ...] = (1024, 7, 3, 32, 4)

# Default pathway lengths (the report: 1 + 20 + 256 + 128 = 405 encoder tokens).
SHORT_TERM_LENGTH = 20
POSITIVE_LENGTH = 256
LIFELONG_HISTORY = 2_000
LIFELONG_LENGTH = 128

BLANK = -1  # item id of an empty slot (an illegal code, or padding in a pathway)


def feedback_index(name: str) -> int:
    """Column of `name` in a feedback vector; a clear error for an unknown name."""
    if name not in FEEDBACK_FIELDS:
        raise ValueError(f"unknown feedback field {name!r}; known fields: {', '.join(FEEDBACK_FIELDS)}")
    return FEEDBACK_FIELDS.index(name)
