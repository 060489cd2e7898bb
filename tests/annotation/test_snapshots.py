"""Snapshots: content-addressed, immutable, idempotent; TRL rows with margin and weight."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.errors import ApplicationError
from annotation.models import Comparison, Judgment, Snapshot
from annotation.selectors.snapshots import annotator_gold_counts, snapshot_gold_votes
from annotation.services import assignment_issue_next, judgment_submit, judgment_supersede
from annotation.services.snapshots import (
    snapshot_create,
    snapshot_rows,
    snapshot_to_dataset,
)
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

ROW_KEYS = {"prompt", "chosen", "rejected", "margin", "weight", "comparison_id", "agreement",
            "n_judgments", "category"}


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path


def _judge(campaign, users, choose: Callable[[int, Comparison], str], *, seed: int = 0) -> None:
    """Every user takes work through the services until none is left, answering ``choose``."""
    rng = random.Random(seed)
    for index, user in enumerate(users):
        while (assignment := assignment_issue_next(campaign=campaign, annotator=user,
                                                   rng=rng)) is not None:
            choice = choose(index, assignment.comparison)
            judgment_submit(
                assignment=assignment, annotator=user, choice=choice,
                strength=2 if choice in ("A", "B") else None,
                idempotency_key=f"{user.pk}-{assignment.pk}", seconds_spent=4.0,
            )


# Per comparison (by position), the three annotators' choices.
PATTERN = [
    ("A", "A", "A"),  # unanimous A
    ("B", "B", "A"),  # B by 2-1
    ("A", "B", "tie"),  # undecided by majority
    ("tie", "both_bad", "B"),  # B with one directional vote
]


@pytest.fixture
def judged(db):
    campaign = CampaignFactory(overlap=3, calibration_rate=0.0)
    comparisons = [ComparisonFactory(campaign=campaign) for _ in PATTERN]
    position = {c.pk: k for k, c in enumerate(comparisons)}
    users = make_users(3)
    _judge(campaign, users, lambda i, c: PATTERN[position[c.pk]][i])
    return campaign, comparisons, users


def test_majority_snapshot_rows_are_trl_conversational_with_margin_and_weight(judged, tmp_path):
    campaign, comparisons, _ = judged
    snapshot = snapshot_create(campaign=campaign, method="majority")
    rows = snapshot_rows(snapshot)
    assert snapshot.row_count == len(rows) == 3  # the 1-1 comparison is undecided, left out
    assert snapshot.params == {"margin_max": 3.0}
    assert [r["comparison_id"] for r in rows] == [comparisons[k].pk for k in (0, 1, 3)]
    unanimous, two_one, one_vote = rows
    c0 = comparisons[0]
    assert set(unanimous) == ROW_KEYS
    assert unanimous["prompt"] == c0.prompt.turns
    assert unanimous["chosen"] == [{"role": "assistant", "content": c0.response_a.text}]
    assert unanimous["rejected"] == [{"role": "assistant", "content": c0.response_b.text}]
    # Confidence (v + 1) / (n + 2): 4/5 -> margin log 4, weight 0.6.
    assert unanimous["margin"] == pytest.approx(math.log(4), abs=1e-6)
    assert unanimous["weight"] == pytest.approx(0.6, abs=1e-6)
    assert (unanimous["agreement"], unanimous["n_judgments"]) == (1.0, 3)
    assert two_one["chosen"][0]["content"] == comparisons[1].response_b.text
    assert two_one["margin"] == pytest.approx(math.log(3 / 2), abs=1e-6)
    assert one_vote["agreement"] == pytest.approx(1 / 3, abs=1e-6)
    path = Path(snapshot.path)
    assert path.parent == tmp_path / "snapshots"
    assert path.name == f"{snapshot.content_hash}.jsonl"
    # Canonical JSON Lines: sorted keys, no spaces.
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == json.dumps(rows[0], sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False)


def test_the_same_content_returns_the_same_snapshot(judged):
    campaign, _, users = judged
    first = snapshot_create(campaign=campaign, method="majority", created_by=users[0])
    again = snapshot_create(campaign=campaign, method="majority", params={"margin_max": 3})
    assert again.pk == first.pk and again.content_hash == first.content_hash
    assert Snapshot.objects.count() == 1
    # The hash names the header (campaign, method, resolved params) plus the file's bytes.
    header = json.dumps({"format": "gaplab-snapshot-v1", "campaign": campaign.name,
                         "method": "majority", "params": {"margin_max": 3.0}},
                        sort_keys=True, separators=(",", ":")).encode()
    body = Path(first.path).read_bytes()
    assert hashlib.sha256(header + b"\n" + body).hexdigest() == first.content_hash
    # A lost file is written again from the same content.
    Path(first.path).unlink()
    assert snapshot_create(campaign=campaign, method="majority").pk == first.pk
    assert Path(first.path).read_bytes() == body


def test_a_different_method_params_or_judgment_gives_a_different_hash(judged):
    campaign, comparisons, users = judged
    majority = snapshot_create(campaign=campaign, method="majority")
    hashes = {
        majority.content_hash,
        snapshot_create(campaign=campaign, method="majority",
                        params={"margin_max": 1.0}).content_hash,
        snapshot_create(campaign=campaign, method="bradley_terry").content_hash,
        snapshot_create(campaign=campaign, method="dawid_skene").content_hash,
    }
    assert len(hashes) == 4 == Snapshot.objects.count()
    # A correction changes the current judgments, so the content and its hash change.
    judgment = Judgment.objects.get(comparison=comparisons[2], annotator=users[2])
    judgment_supersede(judgment=judgment, annotator=users[2], choice="A", strength=3,
                       idempotency_key="fix-1", seconds_spent=2.0)
    corrected = snapshot_create(campaign=campaign, method="majority")
    assert corrected.content_hash not in hashes and corrected.row_count == 4


def test_snapshots_are_immutable_and_a_changed_file_is_refused(judged):
    campaign, _, _ = judged
    snapshot = snapshot_create(campaign=campaign, method="majority")
    snapshot.row_count = 99
    with pytest.raises(ValidationError, match="immutable"):
        snapshot.save()
    stored = Snapshot.objects.get(pk=snapshot.pk)
    assert stored.row_count == 3
    path = Path(stored.path)
    path.write_text(path.read_text().replace('"weight":0.6', '"weight":1.0'))
    with pytest.raises(ApplicationError, match="does not match its hash"):
        snapshot_rows(stored)


def test_dataset_export_round_trips(judged):
    campaign, _, _ = judged
    snapshot = snapshot_create(campaign=campaign, method="bradley_terry")
    rows = snapshot_rows(snapshot)
    dataset = snapshot_to_dataset(snapshot)
    assert len(dataset) == snapshot.row_count == len(rows)
    assert set(dataset.column_names) == ROW_KEYS
    assert dataset.to_list() == rows
    assert dataset[0]["chosen"][0]["role"] == "assistant"


@pytest.mark.parametrize("method", ["majority", "dawid_skene", "bradley_terry"])
def test_every_method_writes_valid_rows(judged, method):
    campaign, _, _ = judged
    snapshot = snapshot_create(campaign=campaign, method=method, params={"margin_max": 2.5})
    rows = snapshot_rows(snapshot)
    assert rows and snapshot.method == method
    # Fitted methods are deterministic too: the same judgments give the same snapshot.
    assert snapshot_create(campaign=campaign, method=method,
                           params={"margin_max": 2.5}).pk == snapshot.pk
    for row in rows:
        assert 0.0 <= row["margin"] <= 2.5 and 0.0 <= row["weight"] <= 1.0
        assert row["chosen"] != row["rejected"]
        assert row["n_judgments"] == 3
        # margin = logit(confidence) and weight = 2 confidence - 1 describe one confidence.
        confidence = (row["weight"] + 1) / 2
        expected = 2.5 if confidence > 1 - 1e-9 else min(math.log(confidence / (1 - confidence)),
                                                         2.5)
        assert row["margin"] == pytest.approx(expected, abs=1e-4)


@pytest.fixture
def contrarian_crowd(db):
    """Two reliable annotators and three contrarians who pick the wrong side, gold included."""
    # Threshold 0: nobody is paused, so the contrarians keep voting.
    campaign = CampaignFactory(overlap=5, calibration_rate=1.0, accuracy_threshold=0.0)
    regular = [ComparisonFactory(campaign=campaign) for _ in range(6)]
    truth = {c.pk: ("A" if k % 2 else "B") for k, c in enumerate(regular)}
    gold = [CalibrationFactory(campaign=campaign, gold_choice=g) for g in ("A", "B", "A")]
    tolerant = CalibrationFactory(campaign=campaign, gold_choice="A", gold_accepts=["A", "tie"])
    truth |= {c.pk: c.gold_choice for c in gold} | {tolerant.pk: "A"}
    users = make_users(5)
    flip = {"A": "B", "B": "A"}

    def choose(index: int, comparison: Comparison) -> str:
        if comparison.pk == tolerant.pk and index == 0:
            return "tie"  # within the tolerance: correct
        right = truth.get(comparison.pk)
        if right is None:
            return "tie"  # an item derived from earlier answers (a re-show): no gold, no row
        return right if index < 2 else flip[right]

    _judge(campaign, users, choose, seed=1)
    return campaign, regular, truth, users


def test_gold_counts_use_the_tolerance_and_gold_weighting_overrules_the_contrarians(
    contrarian_crowd,
):
    campaign, regular, truth, users = contrarian_crowd
    counts = annotator_gold_counts(campaign=campaign)
    assert counts == {users[0].pk: (4, 4), users[1].pk: (4, 4), users[2].pk: (0, 4),
                      users[3].pk: (0, 4), users[4].pk: (0, 4)}
    majority = snapshot_rows(snapshot_create(campaign=campaign, method="majority"))
    weighted_snapshot = snapshot_create(campaign=campaign, method="gold_weighted")
    weighted = snapshot_rows(weighted_snapshot)
    assert weighted_snapshot.params == {"margin_max": 3.0, "prior_strength": 2.0}
    texts = {c.pk: {"A": c.response_a.text, "B": c.response_b.text} for c in regular}

    def correct(rows: list[dict]) -> int:
        return sum(r["chosen"][0]["content"] == texts[r["comparison_id"]][truth[r["comparison_id"]]]
                   for r in rows)

    assert len(majority) == len(weighted) == 6  # calibration items never become rows
    assert correct(majority) == 0
    assert correct(weighted) == 6
    assert all(r["agreement"] == pytest.approx(0.4, abs=1e-6) for r in weighted)


def test_gold_votes_are_the_calibration_judgments_with_what_each_gold_accepts(
    contrarian_crowd,
):
    campaign, regular, truth, users = contrarian_crowd
    votes, gold = snapshot_gold_votes(campaign=campaign)
    calibration = Comparison.objects.filter(campaign=campaign, gold_choice__isnull=False)
    tolerant = calibration.get(gold_accepts=["A", "tie"])
    assert gold == {c.pk: (("A", "tie") if c.pk == tolerant.pk else (c.gold_choice,))
                    for c in calibration}
    assert len(votes) == 5 * len(gold)  # every annotator judged every gold item once
    assert {v.comparison for v in votes} == set(gold)  # no regular item, no re-show
    assert {v.annotator for v in votes} == {u.pk for u in users}
    assert [v for v in votes if v.annotator == users[0].pk and v.comparison == tolerant.pk
            ][0].choice == "tie"


def test_gold_anchored_dawid_skene_overrules_a_contrarian_majority_that_plain_ds_follows(
    contrarian_crowd, caplog,
):
    """Three contrarians always pick the wrong side, two annotators the right one. Plain DS
    takes the majority as the truth; anchored on the four gold items, the contrarians' confusion
    matrices show them inverted, so their votes point the right way."""
    campaign, regular, truth, _ = contrarian_crowd
    texts = {c.pk: {"A": c.response_a.text, "B": c.response_b.text} for c in regular}

    def correct(rows: list[dict]) -> int:
        return sum(r["chosen"][0]["content"] == texts[r["comparison_id"]][truth[r["comparison_id"]]]
                   for r in rows)

    anchored = snapshot_create(campaign=campaign, method="dawid_skene")
    plain = snapshot_create(campaign=campaign, method="dawid_skene_plain")
    assert anchored.params == plain.params == {"margin_max": 3.0, "n_iter": 500, "tol": 1e-5}
    assert anchored.content_hash != plain.content_hash
    anchored_rows, plain_rows = snapshot_rows(anchored), snapshot_rows(plain)
    assert {r["comparison_id"] for r in anchored_rows} <= {c.pk for c in regular}
    assert len(anchored_rows) == len(plain_rows) == 6
    assert correct(plain_rows) == 0
    assert correct(anchored_rows) == 6
    assert "did not converge" not in caplog.text


def test_gold_weighting_without_gold_and_empty_campaigns_are_refused(judged):
    campaign, _, _ = judged
    with pytest.raises(ApplicationError, match="gold"):
        snapshot_create(campaign=campaign, method="gold_weighted")
    with pytest.raises(ApplicationError, match="unknown parameter"):
        snapshot_create(campaign=campaign, method="majority", params={"temperature": 1})
    with pytest.raises(ApplicationError, match="Unknown method"):
        snapshot_create(campaign=campaign, method="borda")
    with pytest.raises(ApplicationError, match="nothing to snapshot"):
        snapshot_create(campaign=CampaignFactory(), method="majority")
    assert Snapshot.objects.count() == 0


def test_snapshot_create_command_prints_the_hash(judged):
    campaign, _, _ = judged
    out = io.StringIO()
    call_command("snapshot_create", "--campaign", campaign.name, "--method", "majority",
                 stdout=out, stderr=io.StringIO())
    printed = out.getvalue().strip().splitlines()[-1]
    assert printed == Snapshot.objects.get().content_hash
    with pytest.raises(CommandError, match="No campaign"):
        call_command("snapshot_create", "--campaign", "nope", "--method", "majority")
    with pytest.raises(CommandError, match="JSON object"):
        call_command("snapshot_create", "--campaign", campaign.name, "--method", "majority",
                     "--params", "[1]")
    with pytest.raises(CommandError, match="gold"):
        call_command("snapshot_create", "--campaign", campaign.name, "--method", "gold_weighted")


def test_snapshot_records_its_fits_diagnostics(db):
    """A Dawid-Skene snapshot stores how its fit ended (outside the hash)."""
    from annotation.models import Snapshot
    from annotation.services import assignment_issue_next, judgment_submit, snapshot_create
    from tests.factories import CampaignFactory, ComparisonFactory, make_users

    campaign = CampaignFactory(overlap=3)
    ComparisonFactory.create_batch(4, campaign=campaign)
    for u, user in enumerate(make_users(3, prefix="fits")):
        for i in range(4):
            a = assignment_issue_next(campaign=campaign, annotator=user)
            judgment_submit(assignment=a, annotator=user, choice="A" if (u + i) % 3 else "B",
                            strength=2, seconds_spent=2.0, idempotency_key=f"f{u}-{i}")
    snapshot = snapshot_create(campaign=campaign, method=Snapshot.Method.DAWID_SKENE_PLAIN)
    snapshot.refresh_from_db()
    assert isinstance(snapshot.fits.get("iterations"), int) and snapshot.fits["iterations"] > 0
    assert isinstance(snapshot.fits.get("converged"), bool)
