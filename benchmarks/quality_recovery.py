"""Recovery of annotator accuracy and campaign epsilon on simulated world campaigns (issue 7).

For each pool x seed (evaluation/quality_recovery.py builds the campaign in memory with the
arithmetic world and the simulated annotators' own ``decide``), prints the Spearman rank
correlation of each estimator with TRUE accuracy (share of decisive regular answers that pick
the higher-utility reply) and the error of the epsilon each implies against the true
judgment-weighted error. Estimators: plain DS, gold-anchored DS (the recompute's fit), gold
accuracy alone, peer agreement, and the ceiling (each annotator's expected accuracy under its
own true parameters: what knowing every parameter, but not the dice, would give). The last
line printed is one JSON object: per pool, the mean Spearman of each estimator over the seeds and
the anchored fit's worst epsilon error.

    .venv/bin/python benchmarks/quality_recovery.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotation import quality as q  # noqa: E402
from evaluation.quality_recovery import world_frame_simulate  # noqa: E402
from evaluation.simulation import (  # noqa: E402
    CROWD,
    DRIFTING,
    EXPERT,
    RANDOM_CLICKER,
    PoolMember,
)

NOISY = replace(CROWD, tau=1.0)  # about 35% wrong
SLOPPY = replace(CROWD, random_rate=0.3)
ISSUE = [PoolMember("crowd", 8, CROWD), PoolMember("drifting", 1, DRIFTING),
         PoolMember("expert", 2, EXPERT)]
POOLS = {
    "issue o3": (ISSUE, 3, 150),
    "issue o7": (ISSUE, 7, 100),
    "mixed o3": ([PoolMember("expert", 2, EXPERT), PoolMember("crowd", 3, CROWD),
                  PoolMember("noisy", 2, NOISY), PoolMember("sloppy", 2, SLOPPY),
                  PoolMember("random", 1, RANDOM_CLICKER)], 3, 150),
    "small5 o3": ([PoolMember("expert", 1, EXPERT), PoolMember("crowd", 2, CROWD),
                   PoolMember("noisy", 1, NOISY), PoolMember("random", 1, RANDOM_CLICKER)],
                  3, 100),
}


def main() -> None:
    summary: dict[str, dict[str, list[float]]] = {}
    for name, (members, overlap, n_prompts) in POOLS.items():
        for seed in range(4):
            sim = world_frame_simulate(pool=members, n_prompts=n_prompts, seed=seed,
                                       overlap=overlap)
            f, n_w, truth = sim.frame, sim.n_annotators, sim.true_accuracy
            anchored = q.fit_dawid_skene(f, n_w, truth=q.PREFERENCE_TRUTH)
            plain = q.fit_dawid_skene(f, n_w, method="dawid_skene_plain")
            stats = q.annotator_stats(f, n_w, ds=anchored)
            est = {
                "plain_ds": plain.competence(),
                "anchored_ds": anchored.competence(),
                "gold": np.array([np.nan if s.gold_accuracy is None else s.gold_accuracy
                                  for s in stats]),
                "peer": np.array([np.nan if s.peer_agreement is None else s.peer_agreement
                                  for s in stats]),
                "ceiling": sim.expected_accuracy,
            }
            rho = {k: round(float(spearmanr(v, truth, nan_policy="omit").statistic), 2)
                   for k, v in est.items()}
            eps = {k: round(float(np.average(1 - np.nan_to_num(v, nan=0.5),
                                             weights=sim.n_judgments) - sim.true_epsilon), 3)
                   for k, v in est.items()}
            print(f"{name:10s} seed {seed} true_eps {sim.true_epsilon:.3f} spearman {rho} "
                  f"eps_error {eps} anchored {anchored.diagnostics()}")
            pool = summary.setdefault(name, {})
            for k, v in rho.items():
                pool.setdefault(f"spearman_{k}", []).append(v)
            pool.setdefault("eps_error_anchored_ds", []).append(eps["anchored_ds"])
    # The last line: per pool, the mean over seeds (and the worst epsilon error).
    print(json.dumps({
        pool: {**{k: round(float(np.mean(v)), 3) for k, v in vals.items()
                  if k.startswith("spearman")},
               "eps_error_anchored_ds_worst": max(vals["eps_error_anchored_ds"], key=abs),
               "seeds": len(vals["eps_error_anchored_ds"])}
        for pool, vals in summary.items()
    }))


if __name__ == "__main__":
    main()
