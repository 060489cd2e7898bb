"""Evaluation's stored state: experiments as jobs (issue 9 part 3).

An ``Experiment`` is a job (``annotation.models.Job``): the same outbox, heartbeat and reaper as
exports and training runs, so a killed gpu worker never leaves one "running". Its ``spec`` is
an ``evaluation.experiments.ExperimentSpec`` as validated JSON; the work is
``experiment_noise_sweep`` (one arm per ε of ``epsilons``), run by
``evaluation.experiment_jobs.experiment_execute`` on the ``gpu`` queue.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from annotation.models import Job


class Experiment(Job):
    """One experiment: a spec, one arm per injected ε, and (once it succeeded) its results."""

    job_task = "evaluation.experiment_execute"
    job_queue = "gpu"

    name = models.CharField(max_length=200, blank=True)
    spec = models.JSONField(default=dict, blank=True,
                            help_text="The ExperimentSpec, every field filled in; validated at "
                                      "creation.")
    epsilons = models.JSONField(default=list, blank=True,
                                help_text="Injected flip rates ε, one arm each, in order.")
    progress = models.FloatField(default=0.0, help_text="Share of the work done, in [0, 1].")
    stage = models.CharField(max_length=200, blank=True, help_text="What it is doing now.")
    result = models.JSONField(default=list, blank=True,
                              help_text="One ExperimentResult (as_dict) per ε, in epsilons' "
                                        "order.")
    headline = models.JSONField(default=dict, blank=True,
                                help_text="spec_key, seconds and per ε result_headline: the "
                                          "JSON line of manage.py experiment.")
    code_version = models.CharField(max_length=64, blank=True,
                                    help_text="The git commit the worker ran (set at start).")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or f"experiment #{self.pk}"


class EvalRound(models.Model):
    """One eval round of a trained policy (issue 9 part 7): a campaign of its measured replies
    against its reference's (one comparison per prompt, sides randomized), judged by people or
    a simulated pool; the policy's win rate over judgments, ties half, with a 90% interval over
    prompts, is the run's r* where no utility function exists (``evaluation.eval_rounds``)."""

    run = models.ForeignKey("training.TrainingRun", on_delete=models.CASCADE,
                            related_name="eval_rounds")
    campaign = models.OneToOneField("annotation.Campaign", on_delete=models.PROTECT,
                                    related_name="eval_round")
    pool = models.CharField(max_length=200, blank=True,
                            help_text="The simulated pool that judged it (e.g. crowd:5); "
                                      "empty = people.")
    seed = models.IntegerField(default=0, help_text="Picks the prompts and the sides.")
    n_items = models.PositiveIntegerField(help_text="Comparisons: one per prompt.")
    win_rate = models.FloatField(null=True, blank=True,
                                 help_text="Share of judgments preferring the policy's reply, "
                                           "ties and both-bad counted half.")
    lo = models.FloatField(null=True, blank=True, help_text="90% interval, lower end.")
    hi = models.FloatField(null=True, blank=True, help_text="90% interval, upper end.")
    n_judgments = models.PositiveIntegerField(default=0)
    n_prompts = models.PositiveIntegerField(default=0, help_text="Prompts with a judgment.")
    computed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"eval round #{self.pk} of run #{self.run_id}"
