"""Text of a world, for training a tiny tokenizer and tiny models on it (DESIGN section 6).

Training must never import evaluation (layers run one way), so the corpus is built here and
handed to ``training.services.models.tiny_models_build`` as plain strings. It holds every user
turn of ``n_prompts`` prompts from every category (held-out ones too: a tokenizer that splits
"divided by" into bytes would make the shift probe measure tokenization, not the policy) and
every candidate reply the world writes for them, so the vocabulary covers what annotators
compare and what a trained policy will write.
"""

from __future__ import annotations

import random

from evaluation.worlds import get_world


def world_corpus(world_name: str, *, n_prompts: int = 500, seed: int = 0) -> list[str]:
    """User turns and candidate replies of ``n_prompts`` prompts of the world, in a fixed order
    (the same arguments give the same list). Raises KeyError/ValueError for an unknown world."""
    world = get_world(world_name)
    rng = random.Random(seed)
    texts: list[str] = []
    for prompt in world.generate_prompts(n_prompts, seed):
        texts.extend(t["content"] for t in prompt.turns)
        texts.extend(world.candidate_responses(prompt, rng))
    return texts
