"""Training runs, sweeps, their metrics and artifacts, and the registry of models (DESIGN §6).

A ``TrainingRun`` is a job (``annotation.models.Job``): the same heartbeat, reaper and outbox
as exports and recomputes, so a killed GPU worker never leaves a run "running". Its ``config``
is the method's config dataclass as validated JSON (``training.configs``); metrics over steps
live in their own table (``RunMetric``), so a chart of any length is one indexed read.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from annotation.models import Campaign, Job, Snapshot


class Method(models.TextChoices):
    REWARD_MODEL = "reward_model", "Reward model (Bradley-Terry)"
    SFT = "sft", "Supervised fine-tuning"
    DPO = "dpo", "DPO"
    RLHF = "rlhf", "RLHF (online RL against a reward model)"
    BEST_OF_N = "best_of_n", "Best-of-n sampling"
    REST = "rest", "ReST (grow, improve, SFT)"
    AI_JUDGE = "ai_judge", "AI judge (labels against principles)"


class ModelKind(models.TextChoices):
    POLICY = "policy", "Policy (causal LM)"
    REWARD = "reward", "Reward model"
    TOKENIZER = "tokenizer", "Tokenizer"


class Sweep(models.Model):
    """A grid of child runs of one method over one snapshot: pressure grids, seed ensembles."""

    name = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=20, choices=Method.choices)
    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="sweeps")
    config = models.JSONField(default=dict, blank=True,
                              help_text="The config every child shares, before the grid.")
    grid = models.JSONField(default=dict, blank=True,
                            help_text="{field: [values]}: one child per combination.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name or f"{self.get_method_display()} sweep #{self.pk}"


class RegisteredModel(models.Model):
    """A model on disk that runs can select by id: built, imported, or produced by a run."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    path = models.CharField(max_length=500, help_text="A folder loadable with from_pretrained.")
    architecture = models.CharField(max_length=100, blank=True)
    parameters = models.PositiveBigIntegerField(null=True, blank=True)
    produced_by = models.ForeignKey("TrainingRun", on_delete=models.SET_NULL, null=True,
                                    blank=True, related_name="produced_models")
    tokenizer = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True,
                                  related_name="+",
                                  help_text="The tokenizer, when it is not in the folder.")
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name} ({self.kind})"


class TrainingRun(Job):
    """One training or sampling run of one method (``training/methods/<method>.py``)."""

    job_task = "training.run_execute"
    job_queue = "gpu"

    name = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=20, choices=Method.choices, db_index=True)
    config = models.JSONField(default=dict, blank=True,
                              help_text="The method's config, validated at creation.")
    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="training_runs")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="training_runs",
                                 help_text="The campaign an AI judge labels.")
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="runs")
    base_model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, null=True,
                                   blank=True, related_name="+",
                                   help_text="The policy or encoder the run starts from.")
    reference_model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, null=True,
                                        blank=True, related_name="+",
                                        help_text="The reference policy; the base if empty.")
    reward_models = models.ManyToManyField(RegisteredModel, blank=True, related_name="+",
                                           help_text="Reward model(s); several = an ensemble.")
    seed = models.IntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    log_tail = models.TextField(blank=True)
    last_checkpoint = models.CharField(max_length=500, blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Final metrics.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or f"{self.method} run #{self.pk}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()


class RunMetric(models.Model):
    """One scalar of a run at one step (loss, reward, KL, ...)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    value = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["run", "name", "step"])]

    def __str__(self) -> str:
        return f"{self.name}@{self.step}={self.value:.4g}"


class RunArtifact(models.Model):
    """A file a run wrote: a model folder's files, samples, a report, event files."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=500)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"],
                                               name="run_artifact_name_unique")]

    def __str__(self) -> str:
        return self.name
