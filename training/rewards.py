"""True-reward functions that callers above training provide (DESIGN §1: what training needs from
a world is passed in, never imported).

``evaluation`` registers a resolver in its ``AppConfig.ready``: given a campaign, it returns the
world's utility as a ``RewardFunction`` (or None). A run whose snapshot comes from a world's
campaign then scores its samples with r* as well as r̂, in the worker, with no import of
``evaluation`` from ``training``.
"""

from __future__ import annotations

from collections.abc import Callable

from annotation.models import Campaign
from training.methods.base import RewardFunction

TrueRewardResolver = Callable[[Campaign], RewardFunction | None]
_resolvers: list[TrueRewardResolver] = []


def true_reward_resolver_register(resolver: TrueRewardResolver) -> None:
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def true_reward_for(campaign: Campaign | None) -> RewardFunction | None:
    """The first registered resolver's answer for this campaign, or None."""
    if campaign is None:
        return None
    for resolver in _resolvers:
        fn = resolver(campaign)
        if fn is not None:
            return fn
    return None
