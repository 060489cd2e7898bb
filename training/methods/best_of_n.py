"""Best-of-n: sample n replies from the base policy per prompt, keep the one the proxy likes best.

Method: rejection sampling against the reward model (Nakano et al. 2021, WebGPT section 3.3;
Gao et al. 2022, section 2 use it as the training-free optimizer). Pressure is n. The policy it
defines has KL(π_bon ‖ π₀) = log n - (n-1)/n nats (Stiennon et al. 2020, appendix G.3), an upper
bound that is tight when replies rarely repeat (Beirami et al. 2024), so KL is reported
analytically (metric ``kl``), not estimated.

Scores: each reward model scores every sample; with several (an ensemble), the selection score
is their mean minus ``ensemble_k`` standard deviations, or their minimum (Coste et al. 2023;
``training.methods.common``). ``reward_proxy`` is the members' mean r̂ of the kept replies;
``score`` the selection score; ``reward_true`` their mean r* on a world. ``*_base`` give the
same means over all samples (n = 1, the π₀ baseline), so a run reports its own gain.

Every sample is written with its scores to ``samples.jsonl`` (one line per sample: prompt
index, sample index, prompt, completion, score, per-member scores, r̂, r*, ``best``), so the
evaluation layer can recompute best-of-m for every m ≤ n by order statistics without sampling
again (DESIGN section 7). Nothing is trained and no model is produced.

Seeded and resumable: prompts are handled in batches, each sampled with the seed
``seed + batch index``; every finished batch is appended to the file and recorded as the run's
checkpoint, so a killed run continues after its last full batch and writes what an
uninterrupted run would. A cancel is obeyed between batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from training.methods.base import MethodResult, RunContext, opt
from training.methods.common import (
    ENSEMBLE_RULES,
    RewardEnsemble,
    ensemble_combine,
    jsonl_read,
    jsonl_write,
    mean_se,
    policy_load,
    rows_prompts,
    samples_score,
)

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model", "reward_models"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})

SAMPLES_FILE = "samples.jsonl"


@dataclass
class Config:
    n: int = opt(16, "Replies sampled per prompt; the best is kept (pressure; KL = log n - "
                     "(n-1)/n nats).", min=1, max=4096)
    n_prompts: int = opt(64, "Distinct snapshot prompts used (picked with the run's seed; fewer "
                             "when the snapshot has fewer).", min=1, max=100_000)
    prompts_per_batch: int = opt(8, "Prompts sampled together; progress, checkpoint and cancel "
                                    "checks happen between batches.", min=1, max=1024)
    max_new_tokens: int = opt(48, "Longest sampled reply, in tokens.", min=1, max=2048)
    temperature: float = opt(1.0, "Sampling temperature of the base policy (1 = its own "
                                  "distribution).", min=0.05, max=4.0)
    ensemble_rule: str = opt("mean_minus_k_std", "How several reward models make one score: "
                                                 "mean - k·std, or the minimum.",
                             choices=ENSEMBLE_RULES)
    ensemble_k: float = opt(0.0, "k in mean - k·std across reward models (reward units per "
                                 "std; 0 = the plain mean).", min=0.0, max=100.0)


def kl_best_of_n(n: int) -> float:
    """log n - (n-1)/n, nats."""
    return math.log(n) - (n - 1) / n


def run(ctx: RunContext) -> MethodResult:
    """Sample, score, keep the best per prompt; write every sample; report the kept ones."""
    from training.modeling import sample

    cfg: Config = ctx.config
    prompts = rows_prompts(ctx.rows or [], limit=cfg.n_prompts, seed=ctx.seed)
    if not prompts:
        raise ValueError("The snapshot has no prompts.")
    batches = [list(range(i, min(len(prompts), i + cfg.prompts_per_batch)))
               for i in range(0, len(prompts), cfg.prompts_per_batch)]
    path = Path(ctx.output_dir) / SAMPLES_FILE
    records, done = _resume(ctx, path, cfg, batches)
    if done:
        ctx.reporter.log(f"best_of_n: resuming after {done} of {len(batches)} batches")
    else:
        jsonl_write(path, [])
    policy, tokenizer = policy_load(ctx)
    ensemble = RewardEnsemble(ctx.reward_models)
    if not ensemble:
        raise ValueError("best_of_n needs at least one reward model.")
    ctx.reporter.progress(done, len(batches))
    for b in range(done, len(batches)):
        if ctx.reporter.cancelled():
            break
        batch_prompts = [prompts[i] for i in batches[b]]
        texts = sample(policy, tokenizer, batch_prompts, n=cfg.n,
                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       seed=ctx.seed + b)
        new = _score_batch(batches[b], batch_prompts, texts, cfg, ensemble, ctx)
        jsonl_write(path, new, append=True)
        records += new
        ctx.reporter.checkpoint(path)
        ctx.reporter.progress(b + 1, len(batches))
        ctx.reporter.metrics(b + 1, _summary(records, cfg))
    metrics = _summary(records, cfg)
    ctx.reporter.log(f"best_of_n: {len(records)} samples on "
                     f"{len({r['prompt_index'] for r in records})} prompts")
    return MethodResult(metrics=metrics, artifacts=[path])


def _resume(ctx: RunContext, path: Path, cfg: Config,
            batches: list[list[int]]) -> tuple[list[dict], int]:
    """The records of the complete batches an earlier attempt wrote and their count (the file
    is rewritten without a torn tail), or none when this attempt does not resume from it."""
    if ctx.resume_from is None or Path(ctx.resume_from).resolve() != path.resolve():
        return [], 0
    records = jsonl_read(path)
    per_prompt: dict[int, int] = {}
    for r in records:
        per_prompt[r["prompt_index"]] = per_prompt.get(r["prompt_index"], 0) + 1
    done = 0
    for batch in batches:
        if all(per_prompt.get(i) == cfg.n for i in batch):
            done += 1
        else:
            break
    keep = {i for batch in batches[:done] for i in batch}
    records = [r for r in records if r["prompt_index"] in keep]
    jsonl_write(path, records)
    return records, done


def _score_batch(indexes: list[int], prompts: list, texts: list[list[str]], cfg: Config,
                 ensemble: RewardEnsemble, ctx: RunContext) -> list[dict]:
    flat_prompts = [p for p, group in zip(prompts, texts, strict=True) for _ in group]
    flat_texts = [t for group in texts for t in group]
    scored = samples_score(flat_prompts, flat_texts, ensemble=ensemble,
                           true_reward=ctx.true_reward)
    selection = ensemble_combine(scored["per_member"], k=cfg.ensemble_k, rule=cfg.ensemble_rule)
    out = []
    for j, (index, prompt, group) in enumerate(zip(indexes, prompts, texts, strict=True)):
        rows = range(j * cfg.n, j * cfg.n + len(group))
        best = max(rows, key=lambda i: selection[i])  # first of ties: deterministic
        for s, i in enumerate(rows):
            out.append({
                "prompt_index": index, "sample_index": s, "prompt": prompt,
                "completion": flat_texts[i], "score": selection[i],
                "scores": [m[i] for m in scored["per_member"]],
                "reward_proxy": scored["reward_proxy"][i],
                "reward_true": scored["reward_true"][i] if "reward_true" in scored else None,
                "best": i == best,
            })
    return out


def _summary(records: list[dict], cfg: Config) -> dict[str, float]:
    best = [r for r in records if r["best"]]
    out = {"n": float(cfg.n), "kl": kl_best_of_n(cfg.n), "prompts": float(len(best))}
    out["kl_bon"] = out["kl"]
    for name, rows in (("", best), ("_base", records)):
        for field, metric in (("score", "score"), ("reward_proxy", "reward_proxy"),
                              ("reward_true", "reward_true")):
            mean, se = mean_se(r[field] for r in rows if r[field] is not None)
            if math.isfinite(mean):
                out[f"{metric}{name}"] = mean
            if math.isfinite(se):
                out[f"{metric}{name}_se"] = se
    out["reply_words"] = mean_se(len(r["completion"].split()) for r in best)[0] if best else 0.0
    return out
