"""Annotation data: campaigns, prompts, responses, comparisons, assignments, judgments.

Names follow DESIGN.md section 2. Choices are stored in canonical order (A = ``response_a``),
never in screen order; the screen side is recorded on the assignment.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotation import choices


class Choice(models.TextChoices):
    """The canonical choices of ``annotation.choices``, as Django choices."""

    A = choices.A, "A"
    B = choices.B, "B"
    TIE = choices.TIE, "Tie"
    BOTH_BAD = choices.BOTH_BAD, "Both bad"


class Strength(models.IntegerChoices):
    SLIGHT = 1, "Slight"
    CLEAR = 2, "Clear"
    STRONG = 3, "Strong"


class Campaign(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200, blank=True)
    instructions = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    principles = models.TextField(
        blank=True, help_text="Written principles an AI judge labels against (one per line), in "
                              "the spirit of Constitutional AI; not shown to annotators.")
    criteria = models.JSONField(
        default=list, blank=True,
        help_text='Optional per-criterion choices, e.g. ["helpfulness", "honesty"].',
    )
    overlap = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Judgments wanted per regular comparison (k).",
    )
    calibration_rate = models.FloatField(
        default=0.1, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of issued items drawn from calibration (gold) comparisons.",
    )
    accuracy_threshold = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Gold accuracy below which an annotator is paused.",
    )
    reshow_rate = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Chance that a decisive judgment is later re-shown, sides swapped, to its "
        "author (self-consistency and position bias).",
    )
    redundancy_cap = models.PositiveSmallIntegerField(
        default=0,
        help_text="Adaptive redundancy: comparisons whose judgments disagree get more raters, "
        "up to this many in all (0 = off).",
    )
    assignment_ttl_seconds = models.PositiveIntegerField(
        default=1800, help_text="Seconds before an unanswered assignment returns to the pool.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.title or self.name

    def clean(self) -> None:
        if not isinstance(self.criteria, list) or not all(
            isinstance(c, str) and c.strip() for c in self.criteria
        ):
            raise ValidationError({"criteria": "Criteria must be a list of non-empty names."})


class Prompt(models.Model):
    """A conversation prefix: a list of ``{"role": ..., "content": ...}`` turns."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="prompts")
    turns = models.JSONField()
    category = models.CharField(max_length=100, blank=True, db_index=True)
    external_id = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=300, blank=True)
    # Fields of the imported row that Gaplab has no column for, kept as they came (e.g.
    # ``context``: retrieved passages, shown to annotators in a collapsible panel).
    extra = models.JSONField(default=dict, blank=True)
    # What an import compares to find a row the campaign already has (the conversation, its
    # context, the responses' texts, kind and gold: ``services.imports.prompt_fingerprint``);
    # blank for prompts made by worlds and simulations, which imports never meet.
    fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["campaign", "fingerprint"],
                                name="prompt_fingerprint_idx")]

    def __str__(self) -> str:
        last = self.turns[-1]["content"] if self.turns else ""
        return last[:80]


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    source_model = models.CharField(max_length=200, blank=True)
    source_version = models.CharField(max_length=100, blank=True)
    source_run = models.CharField(max_length=100, blank=True)
    # Features from a world (length, correctness, agreement with the user, ...); never shown.
    features = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.text[:80]


class Comparison(models.Model):
    class Kind(models.TextChoices):
        REGULAR = "regular", "Regular"
        CALIBRATION = "calibration", "Calibration"
        EVAL = "eval", "Eval"

    class CalibrationType(models.TextChoices):
        """DESIGN section 3: calibration built for preferences, not exact-match gold."""

        KNOWN_ANSWER = "known_answer", "Known answer (with tolerance)"
        DEGRADED = "degraded", "Degraded pair"
        SWAPPED_RESHOW = "swapped_reshow", "Swapped re-show"
        TRANSITIVITY = "transitivity", "Transitivity closer"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REGULAR)
    # The gold answer of a calibration item. Never rendered for annotators (see selectors).
    gold_choice = models.CharField(max_length=16, choices=Choice.choices, null=True, blank=True)
    # Tolerance: every choice scored correct, e.g. ["A", "tie"] ("A, or a tie, is correct").
    gold_accepts = models.JSONField(default=list, blank=True)
    calibration_type = models.CharField(
        max_length=20, choices=CalibrationType.choices, blank=True, default=""
    )
    # A swapped re-show or a transitivity closer is judged against this annotator's own
    # earlier answers, so it is issued to them alone.
    for_annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
        related_name="+",
    )
    source_comparison = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="derived",
        help_text="The comparison a re-show, degraded pair or transitivity closer derives from.",
    )
    # For transitivity closers: the two earlier comparisons (A>B, B>C) that imply the answer.
    source_comparison_2 = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="+",
    )
    # Judgments wanted; None means the campaign's overlap. Raised by adaptive redundancy.
    target_overlap = models.PositiveSmallIntegerField(null=True, blank=True)
    priority = models.IntegerField(default=0, help_text="Higher is issued first.")
    # Live claims (issued and not expired, skipped or reclaimed): kept below the campaign overlap.
    claimed_count = models.PositiveIntegerField(default=0)
    # claimed_count >= campaign.overlap; kept so the claim query walks a partial index of open rows.
    is_full = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["campaign", "kind", "-priority", "id"],
                name="comparison_open_idx",
                condition=Q(is_full=False),
            ),
        ]
        constraints = [
            # Gold only on calibration items; every calibration item has gold except re-shows
            # and transitivity closers, which are scored against the annotator's own answers.
            models.CheckConstraint(
                condition=(
                    Q(kind="calibration")
                    & (Q(gold_choice__isnull=False)
                       | Q(calibration_type__in=["swapped_reshow", "transitivity"]))
                )
                | (~Q(kind="calibration") & Q(gold_choice__isnull=True) & Q(calibration_type="")),
                name="comparison_gold_only_on_calibration",
            ),
            models.CheckConstraint(
                condition=Q(gold_choice__isnull=True)
                | Q(gold_choice__in=[c.value for c in Choice]),
                name="comparison_gold_choice_valid",
            ),
            models.CheckConstraint(
                condition=~Q(response_a=models.F("response_b")),
                name="comparison_two_distinct_responses",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} ({self.kind})"


class Assignment(models.Model):
    """One comparison issued to one annotator, with the screen side and an expiry."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="assignments"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    # True when canonical response A is shown on the left of the screen.
    a_on_left = models.BooleanField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["annotator", "campaign", "status"], name="assignment_mine_idx"),
            models.Index(fields=["campaign", "status", "expires_at"], name="assignment_expiry_idx"),
        ]
        constraints = [
            # Never the same comparison twice to one annotator.
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="assignment_once_per_annotator"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} -> {self.comparison_id} ({self.status})"


class Judgment(models.Model):
    """An annotator's answer in canonical order. Append-only: never updated or deleted."""

    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="judgments")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="judgments")
    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="judgments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments"
    )
    choice = models.CharField(max_length=16, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(choices=Strength.choices, null=True, blank=True)
    criteria_choices = models.JSONField(default=dict, blank=True)
    rationale = models.TextField(blank=True)
    seconds_spent = models.FloatField(validators=[MinValueValidator(0.0)])
    # The choice as the annotator saw it (left/right), kept for audits of position bias.
    a_on_left = models.BooleanField()
    # Unique per annotator, not globally: a key names one answer of its author, and nobody can
    # learn of or squat on another annotator's keys.
    idempotency_key = models.CharField(max_length=100)
    supersedes = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="superseded_by"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["campaign", "created_at"], name="judgment_campaign_time_idx"),
            models.Index(fields=["annotator", "created_at"], name="judgment_annotator_time_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(choice__in=[c.value for c in Choice]), name="judgment_choice_valid"
            ),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__gte=1, strength__lte=3),
                name="judgment_strength_valid",
            ),
            models.CheckConstraint(
                condition=Q(seconds_spent__gte=0), name="judgment_seconds_nonnegative"
            ),
            models.UniqueConstraint(
                fields=["annotator", "idempotency_key"], name="judgment_key_once_per_annotator"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} {self.choice} on #{self.comparison_id}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValidationError("Judgments are append-only; submit a superseding judgment.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Judgments are append-only and cannot be deleted.")


class AnnotatorProfile(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    class Kind(models.TextChoices):
        """Who stands behind the judgments: a person, a simulated annotator (worlds), an
        imported dataset's own preference labels (one ``dataset`` annotator per source), or an
        AI judge labelling against the campaign's principles (``training.methods.ai_judge``)."""

        PERSON = "person", "Person"
        SIMULATED = "simulated", "Simulated"
        DATASET = "dataset", "Dataset labels"
        AI_JUDGE = "ai_judge", "AI judge"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator_profile"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PERSON,
                            db_index=True)
    # For a dataset annotator: the source whose labels it carries (e.g. "Anthropic/hh-rlhf").
    source = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    paused_reason = models.CharField(max_length=300, blank=True)
    # After an admin un-pauses, only gold answered later can pause again.
    unpaused_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.status})"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Job(models.Model):
    """A background job's state, kept in the database rather than in the broker.

    Every kind of background work (exports, quality recomputes, training runs) is a row of a
    subclass. A running job writes ``heartbeat_at``; the reaper (``services.jobs.jobs_reap``,
    on Celery beat) re-queues or fails, with a reason, any job whose heartbeat stopped, so a
    killed worker never leaves a job "running". ``job_task`` names the Celery task that runs a
    job of the subclass, given its id, and ``job_queue`` the queue it is published to.
    """

    Status = JobStatus
    TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    job_task: str = ""
    job_queue: str = ""  # the Celery queue of job_task; "" = the task's route / default

    status = models.CharField(max_length=16, choices=JobStatus.choices,
                              default=JobStatus.QUEUED, db_index=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Times a worker has started this job.")
    max_attempts = models.PositiveSmallIntegerField(
        default=3, help_text="Starts allowed before a lost job is failed instead of re-queued.")
    queued_at = models.DateTimeField(default=timezone.now,
                                     help_text="When the job last entered the queue.")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the last run.")
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class PreferenceExport(Job):
    """An export of a campaign's preferences, produced by a Celery task; state lives here."""

    job_task = "annotation.preference_export_run"

    class Format(models.TextChoices):
        JSONL = "jsonl", "TRL JSONL"
        DATASET = "dataset", "datasets.Dataset (save_to_disk)"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="exports")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    class Sources(models.TextChoices):
        """Whose judgments it aggregates (``annotation.selectors.sources``)."""

        ALL = "all", "Everyone (people, dataset labels, AI judges)"
        PEOPLE = "people", "People only (no dataset labels, no AI judges)"
        DATASET = "dataset", "Dataset labels only"

    format = models.CharField(max_length=16, choices=Format.choices, default=Format.JSONL)
    sources = models.CharField(max_length=16, choices=Sources.choices, default=Sources.ALL)
    path = models.CharField(max_length=500, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    # Of the finished file (a directory's files in name order, for the dataset format): what a
    # researcher checks a download against.
    content_hash = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention deleted the file.")

    def __str__(self) -> str:
        return f"export #{self.pk} {self.campaign} ({self.status})"


class QualityRecompute(Job):
    """A full quality recompute and drift scan of one campaign (``campaign_quality_recompute``).

    At most one is queued per campaign: a request while one waits joins it.
    """

    job_task = "annotation.campaign_quality_recompute"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE,
                                 related_name="quality_recomputes")
    requested_at_judgment = models.PositiveBigIntegerField(
        default=0, help_text="The campaign's judgment count when it was requested.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign"], condition=Q(status="queued"),
                                    name="quality_recompute_one_queued"),
        ]

    def __str__(self) -> str:
        return f"quality recompute #{self.pk} of {self.campaign} ({self.status})"


class CampaignTally(models.Model):
    """Judgments submitted in a campaign; written only by the submit path (one owner).

    Counts per campaign, so that every campaign gets its recompute every
    GAPLAB_QUALITY_RECOMPUTE_EVERY judgments however the campaigns' judgments interleave.
    """

    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, primary_key=True,
                                    related_name="tally")
    judgments = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "campaign tallies"

    def __str__(self) -> str:
        return f"{self.campaign}: {self.judgments} judgments"


class OutboxMessage(models.Model):
    """A task to publish, written in the transaction that needs it (transactional outbox).

    A request that committed has its message here even when the broker is down; it is published
    right after commit, or later by the relay (``services.outbox.outbox_relay`` on beat).
    """

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    queue = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], condition=Q(sent_at__isnull=True),
                         name="outbox_unsent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task}{self.args} ({'sent' if self.sent_at else 'unsent'})"


class AnnotatorQuality(models.Model):
    """Quality of one annotator in one campaign; recomputed from judgments (quality.py)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="qualities")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="qualities"
    )
    n_judgments = models.PositiveIntegerField(default=0)
    n_gold = models.PositiveIntegerField(default=0)
    gold_accuracy = models.FloatField(null=True, blank=True)
    gold_ci_low = models.FloatField(null=True, blank=True)
    gold_ci_high = models.FloatField(null=True, blank=True)
    n_reshows = models.PositiveIntegerField(default=0)
    self_consistency = models.FloatField(null=True, blank=True)
    n_triples = models.PositiveIntegerField(default=0)
    transitivity = models.FloatField(null=True, blank=True)
    competence = models.FloatField(null=True, blank=True, help_text="Dawid-Skene P(correct).")
    peer_agreement = models.FloatField(null=True, blank=True)
    position_bias = models.FloatField(null=True, blank=True, help_text="P(choose left) - 0.5.")
    length_bias = models.FloatField(
        null=True, blank=True,
        help_text="Logistic coefficient of the length difference (per 100 characters).",
    )
    sycophancy_bias = models.FloatField(
        null=True, blank=True,
        help_text="P(choose the response agreeing with the user) - 0.5 on probe items.",
    )
    median_seconds = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "annotator qualities"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "annotator"], name="quality_once"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} in {self.campaign}"


class CampaignQuality(models.Model):
    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="quality")
    n_judgments = models.PositiveIntegerField(default=0)
    alpha_nominal = models.FloatField(null=True, blank=True)
    alpha_ordinal = models.FloatField(null=True, blank=True)
    noise_epsilon = models.FloatField(
        null=True, blank=True, help_text="Judgment-weighted mean of annotator noise."
    )
    majority_ds_disagreement = models.FloatField(null=True, blank=True)
    position_bias = models.FloatField(null=True, blank=True)
    label_mix = models.JSONField(default=dict, blank=True)
    # Diagnostics of every iterative fit of the recompute, e.g. {"dawid_skene": {"iterations":
    # 14, "converged": true, "anchored_on_gold": 37, "tolerance": 1e-6}}: shown on dashboards.
    fits = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "campaign qualities"

    def __str__(self) -> str:
        return f"quality of {self.campaign}"


class DriftAlert(models.Model):
    """A change point found in one annotator's stream (accuracy, gold errors or a bias)."""

    class Stream(models.TextChoices):
        GOLD_ERROR = "gold_error", "Gold errors"
        ACCURACY = "accuracy", "Accuracy (gold and peers)"
        POSITION = "position", "Position bias"
        LENGTH = "length", "Length bias"
        SYCOPHANCY = "sycophancy", "Sycophancy"
        # Not a change point: a run of judgments faster than anyone can read (quality.py's
        # speed flag), raised and acknowledged like a drift alert.
        SPEED = "speed", "Implausible speed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="alerts")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="drift_alerts"
    )
    stream = models.CharField(max_length=20, choices=Stream.choices)
    detector = models.CharField(max_length=60)
    onset_index = models.PositiveIntegerField(help_text="Estimated onset, index in the stream.")
    detected_index = models.PositiveIntegerField()
    # The same two moments as the annotator's own judgment numbers (1 = their first judgment in
    # the campaign): what charts and tables show, whatever the stream.
    onset_judgment = models.PositiveIntegerField(null=True, blank=True)
    detected_judgment = models.PositiveIntegerField(null=True, blank=True)
    onset_at = models.DateTimeField(null=True, blank=True)
    detected_at = models.DateTimeField(
        null=True, blank=True, help_text="When the judgment that raised the alarm was made."
    )
    statistic = models.FloatField()
    message = models.CharField(max_length=300, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "annotator", "stream", "onset_index"], name="alert_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stream} drift of {self.annotator} from #{self.onset_index}"


class Snapshot(models.Model):
    """An immutable, content-hashed dataset of aggregated preferences (TRL format + weight)."""

    class Method(models.TextChoices):
        MAJORITY = "majority", "Majority vote"
        GOLD_WEIGHTED = "gold_weighted", "Gold-weighted vote"
        DAWID_SKENE = "dawid_skene", "Dawid-Skene, gold-anchored"
        DAWID_SKENE_PLAIN = "dawid_skene_plain", "Dawid-Skene, plain (no gold)"
        BRADLEY_TERRY = "bradley_terry", "Bradley-Terry (Davidson ties)"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="snapshots")
    method = models.CharField(max_length=20, choices=Method.choices)
    content_hash = models.CharField(max_length=64, unique=True)
    path = models.CharField(max_length=500)
    row_count = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    params = models.JSONField(default=dict, blank=True)
    # Diagnostics of the aggregation's fit (iterations, converged, ...); not part of the hash:
    # the same rows are the same snapshot however many iterations found them.
    fits = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.campaign} {self.method} {self.content_hash[:10]}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValidationError("Snapshots are immutable; create a new one.")
        super().save(*args, **kwargs)
