"""Fixtures shared by training tests: tiny models built once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from training.methods.base import ModelRef


@dataclass(frozen=True)
class TinyModels:
    """Folders of a tiny tokenizer, policy and (untrained) reward model, trained/built on the
    arithmetic world's text, with ``ModelRef``s and a few prompts to sample from."""

    tokenizer_path: str
    policy_path: str
    reward_path: str
    prompts: list[list[dict[str, str]]]  # 16 arithmetic prompts as role/content turns

    @property
    def policy_ref(self) -> ModelRef:
        return ModelRef(id=None, path=self.policy_path, kind="policy", name="tiny-policy",
                        tokenizer_path=self.tokenizer_path)

    @property
    def reward_ref(self) -> ModelRef:
        return ModelRef(id=None, path=self.reward_path, kind="reward", name="tiny-reward",
                        tokenizer_path=self.tokenizer_path)

    @property
    def tokenizer_ref(self) -> ModelRef:
        return ModelRef(id=None, path=self.tokenizer_path, kind="tokenizer",
                        name="tiny-tokenizer")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A tokenizer (vocabulary 1,024), a 2-layer 128-wide Llama policy and a reward model of the
    same shape, seed 0, built from 200 arithmetic prompts and their candidate replies (about
    1 s). The folders are shared by the session: copy before changing weights in place."""
    from evaluation.corpus import world_corpus
    from evaluation.worlds import get_world
    from training.modeling import tiny_models_write

    root: Path = tmp_path_factory.mktemp("tiny_models")
    built = tiny_models_write(world_corpus("arithmetic", n_prompts=200, seed=0), root,
                              name="tiny", seed=0)
    prompts = [p.turns for p in get_world("arithmetic").generate_prompts(16, 1)]
    return TinyModels(tokenizer_path=built["tokenizer"][0], policy_path=built["policy"][0],
                      reward_path=built["reward"][0], prompts=prompts)


@pytest.fixture
def tiny_registered(db, tiny_models: TinyModels) -> dict:
    """The session's tiny models registered as ``RegisteredModel`` rows (tokenizer, policy,
    reward; the models point at the tokenizer row)."""
    from training.services.runs import model_register

    tok = model_register(name="tiny-tokenizer", kind="tokenizer", path=tiny_models.tokenizer_path,
                         meta={"architecture": "tokenizer"})
    policy = model_register(name="tiny-policy", kind="policy", path=tiny_models.policy_path,
                            tokenizer=tok, meta={"architecture": "LlamaForCausalLM"})
    reward = model_register(name="tiny-reward", kind="reward", path=tiny_models.reward_path,
                            tokenizer=tok,
                            meta={"architecture": "LlamaForSequenceClassification"})
    return {"tokenizer": tok, "policy": policy, "reward": reward}
