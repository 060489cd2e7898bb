"""training/modeling.py: tokenizers, tiny models, sampling, log-probs, KL, rewards."""

from __future__ import annotations

from training.modeling import policy_load, prompt_text, reward_load, reward_score, sample


def test_tiny_models_fixture_loads_and_samples(tiny_models):
    """The shared folders load through ModelRefs; the policy samples, the reward scores."""
    policy, tok = policy_load(tiny_models.policy_ref)
    out = sample(policy, tok, tiny_models.prompts[:2], n=2, max_new_tokens=5, temperature=1.0,
                 seed=0)
    assert [len(o) for o in out] == [2, 2]
    reward, rtok = reward_load(tiny_models.reward_ref)
    scores = reward_score(reward, rtok, tiny_models.prompts[:2], ["1", "2"])
    assert len(scores) == 2
    assert prompt_text(tok, tiny_models.prompts[0]).endswith("<|assistant|>\n")
