"""Reward-model evaluation: pairwise accuracy of a registered reward model on preference pairs.

A pair counts 1 when the model scores the chosen reply above the rejected one, one half on an
exact tie (a model that cannot tell the two apart scores 0.5, chance, not 0), 0 otherwise; the
accuracy is the mean over pairs, overall and per ``category`` / ``source`` when pairs carry them
(RewardBench reports the same per-subset means, Lambert et al. 2024, section 3). Scores come from
``training.modeling.reward_score``, the reader every consumer of a reward model uses, so the
number is the one best-of-n and RLHF see.

Pair files (JSON Lines, one pair a line), in any of three shapes:

- Anthropic HH (Bai et al. 2022): ``prompt`` a string of ``"\\n\\nHuman: ..."`` /
  ``"\\n\\nAssistant: ..."`` turns ending in the empty final ``"\\n\\nAssistant:"``; ``chosen`` /
  ``rejected`` the two reply strings;
- TRL conversational with an explicit prompt (what snapshots hold): ``prompt`` a list of
  role/content turns, ``chosen`` / ``rejected`` lists ending in the assistant reply (or strings);
- TRL conversational with an implicit prompt: no ``prompt``; ``chosen`` / ``rejected`` whole
  conversations whose common leading turns are the prompt.

A plain prompt string without HH markers is one user turn. ``source`` values such as
``repo@commit:path#L12`` are grouped without their ``#...`` anchor (a per-line anchor would make
every pair its own group).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from annotation.errors import ApplicationError
from training.models import ModelKind, RegisteredModel

Turns = list[dict[str, str]]

_HH_MARK = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def hh_turns(text: str) -> Turns:
    """Role/content turns of an HH transcript; the empty last ``Assistant:`` (where the reply
    goes) is dropped. Text before the first marker, if any, becomes a user turn."""
    parts = _HH_MARK.split(text)
    turns: Turns = []
    if parts[0].strip():
        turns.append({"role": "user", "content": parts[0].strip()})
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        turns.append({"role": _HH_ROLE[role], "content": content.strip()})
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return turns


def _prompt_turns(prompt: Any) -> Turns:
    if isinstance(prompt, str):
        return hh_turns(prompt) if _HH_MARK.search(prompt) else [
            {"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(t, Mapping) and "content" in t
                                        for t in prompt):
        return [{"role": str(t.get("role", "user")), "content": str(t["content"])}
                for t in prompt]
    raise ValueError("prompt must be a string or a list of role/content turns")


def _reply_text(reply: Any) -> str:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, Mapping) and "content" in reply:
        return str(reply["content"])
    if isinstance(reply, list) and reply and isinstance(reply[-1], Mapping) \
            and "content" in reply[-1]:
        return str(reply[-1]["content"])
    raise ValueError("chosen and rejected must be strings or lists of role/content messages")


def pair_normalize(pair: Mapping[str, Any]) -> dict[str, Any]:
    """``{prompt: turns, chosen: str, rejected: str, category, source}`` from any shape the
    module docstring lists. Raises ValueError saying what is wrong."""
    for side in ("chosen", "rejected"):
        if side not in pair:
            raise ValueError(f"missing {side!r}")
    chosen, rejected = pair["chosen"], pair["rejected"]
    if "prompt" in pair and pair["prompt"] is not None:
        prompt = _prompt_turns(pair["prompt"])
    elif isinstance(chosen, list) and isinstance(rejected, list) and chosen and rejected:
        # Implicit prompt: the common leading turns of the two conversations.
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt = _prompt_turns(list(chosen[:n]))
        chosen, rejected = chosen[n:], rejected[n:]
    else:
        raise ValueError("missing 'prompt' (needed unless chosen and rejected are "
                         "whole conversations)")
    out = {"prompt": prompt, "chosen": _reply_text(chosen), "rejected": _reply_text(rejected)}
    for key in ("category", "source"):
        if pair.get(key) not in (None, ""):
            out[key] = str(pair[key])
    return out


def pairs_load(*, path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Normalized pairs (``pair_normalize``) from a JSON Lines file, in file order; at most
    ``limit``. Blank lines are skipped. Raises ApplicationError naming the file and the first
    bad line."""
    path = Path(path)
    if not path.is_file():
        raise ApplicationError(f"Pairs file {path} does not exist.")
    pairs: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if limit is not None and len(pairs) >= limit:
                    break
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                    pairs.append(pair_normalize(record))
                except (ValueError, TypeError) as exc:
                    raise ApplicationError(f"Pairs file {path}, line {number}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise ApplicationError(f"Pairs file {path} is not UTF-8 text.") from exc
    if not pairs:
        raise ApplicationError(f"Pairs file {path} holds no pairs.")
    return pairs


def _source_group(source: str) -> str:
    return source.split("#", 1)[0]


def _subsets(pairs: list[dict[str, Any]], wins: list[float], key: str,
             group: Any = str) -> dict[str, dict[str, Any]]:
    buckets: dict[str, list[float]] = {}
    for pair, win in zip(pairs, wins, strict=True):
        if pair.get(key):
            buckets.setdefault(group(pair[key]), []).append(win)
    return {name: {"accuracy": sum(w) / len(w), "n": len(w),
                   "ties": sum(1 for x in w if x == 0.5)}
            for name, w in sorted(buckets.items())}


def reward_model_evaluate(*, model: RegisteredModel, pairs: Iterable[Mapping[str, Any]]
                          ) -> dict[str, Any]:
    """Pairwise accuracy of ``model`` on ``pairs`` (any shape ``pair_normalize`` reads):
    ``{accuracy, n, ties, by_category: {name: {accuracy, n, ties}}, by_source: {...}}`` (the
    subsets only over pairs that carry the field). Raises ApplicationError for a model that is
    not a reward model, a bad pair, or no pairs."""
    from training.methods.reward_model import pair_accuracy
    from training.modeling import reward_load
    from training.services.runs import model_ref

    if model.kind != ModelKind.REWARD:
        raise ApplicationError(f"Model #{model.pk} is a {model.kind}, not a reward model.")
    normalized = []
    for i, pair in enumerate(pairs):
        try:
            normalized.append(pair_normalize(pair))
        except (ValueError, TypeError) as exc:
            raise ApplicationError(f"Pair {i}: {exc}.") from exc
    if not normalized:
        raise ApplicationError("No pairs to evaluate.")
    try:
        net, tokenizer = reward_load(model_ref(model))
    except (OSError, ValueError) as exc:
        raise ApplicationError(f"Model #{model.pk} does not load from {model.path}: "
                               f"{exc}") from exc
    scored = pair_accuracy(net, tokenizer, normalized)
    return {"accuracy": scored["accuracy"], "n": scored["n"], "ties": scored["ties"],
            "by_category": _subsets(normalized, scored["wins"], "category"),
            "by_source": _subsets(normalized, scored["wins"], "source", _source_group)}
