"""A reward a researcher could write, as a plugin: freshness against the user's recent topics.

    python -m benchmarks.retention --plugin benchmarks.retention_rewards   (loaded by default)

`freshness`: per shown item, 1 when its topic (the catalog's middle category, public item
metadata) is absent from the user's last 20 impressions (the short-term pathway), else 0; the
slate's reward is the mean over its slots (a blank or a repeat scores 0, as every built-in).
It reads the observation only, never the simulator's truth.
"""

from __future__ import annotations

import torch

from rewards import register
from rewards.protocol import slate_mean


@register("freshness", requires=("context",))
def freshness(catalog):
    topics = torch.as_tensor(catalog.category[:, 1], dtype=torch.long)  # (I,)

    def reward(batch):
        recent = batch.context["short_term_items"].long()  # (B, H)
        recent_topics = torch.where(recent >= 0, topics.to(recent.device)[recent.clamp(min=0)],
                                    -1)  # (B, H)
        item_topics = topics.to(batch.items.device)[batch.items.clamp(min=0)]  # (B, S)
        seen = (item_topics[:, :, None] == recent_topics[:, None, :]).any(-1)  # (B, S)
        return slate_mean((~seen).float(), batch.items)

    return reward
