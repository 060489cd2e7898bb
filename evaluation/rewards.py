"""A world's utility as training's true reward r* (``training.rewards``): registered when the
app loads, so a run on a world's campaign scores its samples with r* in the worker."""

from __future__ import annotations

from annotation.models import Campaign
from training.methods.base import RewardFunction


def world_reward_function(world_name: str) -> RewardFunction:
    """r*(prompt, completion) from the world's utility; a prompt the world cannot parse (not
    one of its templates) scores NaN rather than a made-up number."""
    from evaluation.worlds import get_world

    world = get_world(world_name)

    def reward(prompts: list[list[dict[str, str]]], completions: list[str]) -> list[float]:
        out = []
        for turns, text in zip(prompts, completions, strict=True):
            parsed = world.parse_prompt(turns)
            out.append(float("nan") if parsed is None else float(world.utility(parsed, text)))
        return out

    return reward


def campaign_true_reward(campaign: Campaign) -> RewardFunction | None:
    from evaluation.services import campaign_world_name

    name = campaign_world_name(campaign=campaign)
    return world_reward_function(name) if name else None
