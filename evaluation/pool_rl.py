"""RL with a KL penalty on π₀'s sample pools: a trained policy with no network. Pure numpy, no ORM.

PREDICTIONS P9 ("varying the KL penalty changes where training stops, not the gold-vs-KL curve")
and P18 need policies *trained* against r̂ with a KL coefficient β, not only tilts. Here each
prompt's policy is a tabular softmax over that prompt's K pooled π₀ samples (π₀ uniform over
the pool), π_θ(k) = softmax(θ)_k with θ = 0 at the start (π = π₀), trained on

    J_β(θ) = E_π[r̂] − β·KL(π ‖ π₀),   KL = Σ_k π_k log(K π_k)   (nats, exact for the pool).

**Update.** The exact gradient is ∂J/∂θ_k = π_k (f_k − E_π f) with f_k = r̂_k − β log(K π_k):
a policy gradient whose per-sample reward is r̂ minus β times the log-ratio, which is the reward
InstructGPT-style PPO and RLOO optimize (r̂ − β log π/π₀); their sampled gradient
E_π[∇ log π · (f − baseline)] has exactly this expectation (a baseline, RLOO's leave-one-out
mean included, changes the variance, not the mean), so ``method="pg"`` is the noise-free,
small-step limit of PPO/RLOO on a tabular policy (PPO's clipping only bounds how far one step
moves). The step is θ ← θ + η·K·∇J, i.e. plain gradient ascent with learning rate ηK: at π₀,
K π_k = 1, so η is the logit change per unit advantage whatever the pool size.
``method="npg"`` is the natural gradient (Fisher-preconditioned; for the softmax, mirror
descent with a KL proximity term): θ ← θ + η(f − E_π f), which reduces to
θ_{t+1} = (1 − ηβ)θ_t + η r̂ up to a constant per prompt (Cen et al. 2021); it needs ηβ ≤ 1.
Why both: PG is what sampled policy-gradient RLHF does in expectation; NPG is the update whose
path is known in closed form, a control for the test.

**How the trajectory differs from the tilt path, and what it means for P9.** Both updates
converge to the penalized optimum π* ∝ π₀·exp(r̂/β), the tilt at λ = 1/β (``gap.tilt``), so the
*endpoints* of long runs lie on the tilting curve whatever β. NPG's whole trajectory lies on it
too: θ_t = λ_t r̂ with λ_t = (1 − (1 − ηβ)^t)/β, so every intermediate policy is a tilt, and
under NPG P9 holds by construction (β only sets where on the one curve training stops; early
steps are the same for every β since λ_t ≈ ηt). Plain PG is not a tilt: its step on sample k is
weighted by π_k, so samples that are already likely grow faster than exp(λ r̂) would make them
(rich-get-richer, Mei et al. 2020), and the policy at a given KL puts more weight on the pool's
current leaders than the tilt at that KL. PG trajectories for different β coincide at first
(the penalty's gradient is 0 at π₀) and separate only once the penalty bites, so P9 under PG is
an empirical question: does the gold at matched KL depend on β? ``tests/evaluation/
test_predictions.py`` measures it. A fixed step budget also means a small β may stop before its
optimum: "where training stops" is the KL at the budget, not at convergence.

**Measured** (``tests/evaluation/test_predictions.py``, a model-B world with a rare exploit,
100 prompts × 128 samples, β = 1 … 1/16): NPG trajectories agree at matched KL to < 0.001 in
gold. PG's do not: softmax PG from π₀ first collapses the prompts whose pool has a far-ahead
leader (often the exploit) while the rest barely move, so on its way up it passes a KL with
both proxy and gold well below the tilt's (gold 0.22 vs 0.55 at d = 0.71), and a run whose
penalty has settled it at that KL sits on the tilting curve instead. The gap at matched KL
agrees across β within its band (proxy and gold fall together). So under PG the penalty is
not early stopping: stopping an unpenalized run at a KL is worse for gold than penalizing to
it. Runs that converge land on the tilt whatever the update, and then P9 holds.

**Curves.** :func:`trajectory_curve` turns one β's recorded steps into a ``gap.GapCurve``
(pressure = step) and :func:`sweep_curve` the endpoints of a β grid into the "RLHF KL sweep"
curve (pressure = 1/β, the PREDICTIONS convention λ = 1/β). Both go through
``gap.policy_curve``: a policy's expectations are exact, so each prompt contributes its exact
E_π[r̂], E_π[r*] and KL as one "sample" (the k1 estimator of a single value is that value), and
standardization, bootstrap over prompts and joint resampling (same prompts and seed → replicate
b is the same resampled prompt set on every curve) are gap.py's own. ``kl_se`` there is the
spread of per-prompt KL over √P, not Monte Carlo error (there is none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from evaluation.gap import DEFAULT_LEVEL, DEFAULT_N_BOOT, GapCurve, policy_curve

METHODS = ("pg", "npg")


@dataclass(frozen=True)
class Trajectory:
    """One β's training run: per-prompt exact KL, E_π[r̂] and E_π[r*] at the recorded steps.

    Arrays are (S, P) for S recorded steps (step 0 is π₀) and P prompts, in the scores' own
    units (standardization happens in the curves).
    """

    beta: float
    method: str
    lr: float
    steps: np.ndarray  # (S,)
    kl: np.ndarray  # (S, P) nats
    proxy: np.ndarray  # (S, P)
    true: np.ndarray  # (S, P)

    @property
    def final_kl(self) -> float:
        """KL(π‖π₀) averaged over prompts at the last recorded step (where training stopped)."""
        return float(self.kl[-1].mean())


def _pools(proxy: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(proxy, dtype=float)
    t = np.asarray(true, dtype=float)
    if p.ndim != 2 or p.shape != t.shape or p.shape[1] < 2:
        raise ValueError("proxy and true must be (prompts, samples) arrays of one shape, K >= 2")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("scores must be finite")
    return p, t


def train(
    *,
    proxy: ArrayLike,
    true: ArrayLike,
    betas: Sequence[float],
    steps: int,
    lr: float,
    method: str = "pg",
    record_every: int = 1,
) -> list[Trajectory]:
    """Train one tabular policy per (β, prompt) by exact-gradient ascent on E_π[r̂] − β·KL.

    ``proxy``, ``true``: (P, K) scores of π₀'s pooled samples (r̂ drives training, r* is only
    recorded). All β run together for ``steps`` steps of size ``lr``; the state is recorded at
    step 0 and every ``record_every`` steps, and at the last step.
    """
    p, t = _pools(proxy, true)
    beta = np.asarray(betas, dtype=float).ravel()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if not beta.size or np.any(~(beta > 0)) or not np.all(np.isfinite(beta)):
        raise ValueError("betas must be positive and finite")
    if steps < 1 or record_every < 1 or not lr > 0:
        raise ValueError("need steps >= 1, record_every >= 1 and lr > 0")
    if method == "npg" and lr * beta.max() > 1:
        raise ValueError("npg needs lr * beta <= 1 (else θ overshoots r̂/β and oscillates)")
    n_p, k = p.shape
    log_k = math.log(k)
    b = beta[:, None, None]
    theta = np.zeros((beta.size, n_p, k))
    rec_steps, kls, e_p, e_t = [], [], [], []

    def record(step: int, log_pi: np.ndarray, pi: np.ndarray) -> None:
        rec_steps.append(step)
        kls.append(np.maximum((pi * (log_pi + log_k)).sum(axis=2), 0.0))
        e_p.append((pi * p).sum(axis=2))
        e_t.append((pi * t).sum(axis=2))

    for step in range(steps + 1):
        shifted = theta - theta.max(axis=2, keepdims=True)
        pi = np.exp(shifted)
        z = pi.sum(axis=2, keepdims=True)
        pi /= z
        log_pi = shifted - np.log(z)
        if step % record_every == 0 or step == steps:
            record(step, log_pi, pi)
        if step == steps:
            break
        f = p - b * (log_pi + log_k)
        adv = f - (pi * f).sum(axis=2, keepdims=True)
        theta += lr * (k * pi * adv if method == "pg" else adv)
    kl, pr, tr = (np.stack(x, axis=1) for x in (kls, e_p, e_t))  # (β, S, P)
    s = np.asarray(rec_steps)
    return [
        Trajectory(beta=float(beta[i]), method=method, lr=float(lr), steps=s, kl=kl[i],
                   proxy=pr[i], true=tr[i])
        for i in range(beta.size)
    ]


def _curve(
    *, pressure: np.ndarray, kl: np.ndarray, e_proxy: np.ndarray, e_true: np.ndarray,
    proxy: np.ndarray, true: np.ndarray, n_boot: int, level: float, seed: int,
) -> GapCurve:
    """policy_curve with each prompt's exact expectations as its one 'sample'."""
    cols = range(kl.shape[0])
    return policy_curve(
        pressure=pressure,
        proxy=[e_proxy[i][:, None] for i in cols],
        true=[e_true[i][:, None] for i in cols],
        log_ratio=[kl[i][:, None] for i in cols],
        ref_proxy=proxy, ref_true=true, kl_estimator="k1", n_boot=n_boot, level=level,
        seed=seed,
    )


def trajectory_curve(
    *,
    trajectory: Trajectory,
    proxy: ArrayLike,
    true: ArrayLike,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> GapCurve:
    """The gap along one β's training (pressure = step), standardized under the π₀ pools."""
    p, t = _pools(proxy, true)
    tr = trajectory
    return _curve(pressure=tr.steps.astype(float), kl=tr.kl, e_proxy=tr.proxy, e_true=tr.true,
                  proxy=p, true=t, n_boot=n_boot, level=level, seed=seed)


def sweep_curve(
    *,
    trajectories: Sequence[Trajectory],
    proxy: ArrayLike,
    true: ArrayLike,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> GapCurve:
    """The "RLHF KL sweep": each β's final policy, one point per β (pressure = 1/β)."""
    p, t = _pools(proxy, true)
    if not trajectories:
        raise ValueError("need at least one trajectory")
    return _curve(
        pressure=np.array([1.0 / tr.beta for tr in trajectories]),
        kl=np.stack([tr.kl[-1] for tr in trajectories]),
        e_proxy=np.stack([tr.proxy[-1] for tr in trajectories]),
        e_true=np.stack([tr.true[-1] for tr in trajectories]),
        proxy=p, true=t, n_boot=n_boot, level=level, seed=seed,
    )
