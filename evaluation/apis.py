"""REST API for experiments (``/api/v1/experiments/``): create, list, read, cancel. Each view
validates its input, calls one service, and serializes; admin and researcher roles only.

Creating answers 202 (the experiment is queued on the ``gpu`` queue through the outbox; poll
its detail for status, progress and stage). A spec that does not validate
(``ExperimentConfigError``) answers 400 with DRF's field-error body, spec fields nested under
``spec`` (``{"spec": {"flip_rate": ["Must be <= 0.4999."]}}``) and ``epsilons`` / ``name`` at
the top, and nothing is queued. A bad MAPS variant is named where it sits in the spec
(``{"spec": {"variants[1].overrides.ensemble_size": ["Must be <= 10."]}}``).
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import JobStatus
from annotation.pagination import LimitOffsetPagination
from annotation.permissions import IsAdminOrResearcher
from annotation.schema import error_responses
from evaluation.experiment_jobs import (
    INPUT_FIELDS,
    ExperimentConfigError,
    experiment_cancel,
    experiment_create,
)
from evaluation.models import Experiment


def _field_errors(exc: ExperimentConfigError) -> ValidationError:
    body: dict[str, Any] = {}
    for name, messages in exc.errors.items():
        if name in INPUT_FIELDS:
            body.setdefault(name, []).extend(messages)
        else:
            key = "non_field_errors" if name == "spec" else name
            body.setdefault("spec", {})[key] = list(messages)
    return ValidationError(body)


_SUMMARY_FIELDS = ["id", "name", "status", "progress", "stage", "epsilons", "headline",
                   "attempts", "max_attempts", "cancel_requested", "error", "code_version",
                   "created_at", "queued_at", "started_at", "heartbeat_at", "finished_at"]


class _ExperimentSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Experiment
        fields = _SUMMARY_FIELDS


class _ExperimentDetailSerializer(serializers.ModelSerializer):
    class Meta:
        model = Experiment
        fields = [*_SUMMARY_FIELDS[:2], "spec", *_SUMMARY_FIELDS[2:], "result"]


class ExperimentCollectionApi(APIView):
    """``GET``: experiments, newest first (``?status=``), without their full results.
    ``POST``: validate and queue one experiment (202; the ``gpu`` queue, through the outbox)."""

    permission_classes = [IsAdminOrResearcher]
    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=JobStatus.choices, required=False)

    class InputSerializer(serializers.Serializer):
        spec = serializers.DictField(
            help_text="ExperimentSpec fields (evaluation/experiments.py); missing ones take "
                      "their defaults ({} = every default). MAPS variants: 'variants': "
                      "[{name, lever (M, A, P, S, drift), overrides: {field: value}}].")
        epsilons = serializers.ListField(
            child=serializers.FloatField(), required=False, allow_null=True, default=None,
            help_text="Injected flip rates ε in [0, 0.5), one arm each; default "
                      "[spec.flip_rate].")
        name = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                     default="")

    @extend_schema(parameters=[FilterSerializer],
                   responses=_ExperimentSummarySerializer(many=True))
    def get(self, request):
        # A plain dict: DRF reads ?status= from a QueryDict as absent, the schema as invalid.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        experiments = Experiment.objects.filter(**filters.validated_data).defer("result")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(experiments.order_by("-created_at", "-pk"), request)
        return paginator.get_paginated_response(
            _ExperimentSummarySerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={202: _ExperimentDetailSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            experiment = experiment_create(**data.validated_data, requested_by=request.user)
        except ExperimentConfigError as exc:
            raise _field_errors(exc) from exc
        return Response(_ExperimentDetailSerializer(experiment).data,
                        status=status.HTTP_202_ACCEPTED)


class ExperimentDetailApi(APIView):
    """An experiment: status, progress, stage, spec, headline and (once it succeeded) the
    full result, one ExperimentResult per (variant, ε), the baseline's first."""

    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses=_ExperimentDetailSerializer)
    def get(self, request, experiment_id: int):
        experiment = get_object_or_404(Experiment, pk=experiment_id)
        return Response(_ExperimentDetailSerializer(experiment).data)


class ExperimentCancelApi(APIView):
    """Cancel an experiment: a queued one at once, a running one at its next progress report.
    409 once it ended."""

    permission_classes = [IsAdminOrResearcher]

    @extend_schema(request=None,
                   responses={200: _ExperimentSummarySerializer, **error_responses(409)})
    def post(self, request, experiment_id: int):
        experiment = experiment_cancel(
            experiment=get_object_or_404(Experiment, pk=experiment_id))
        return Response(_ExperimentSummarySerializer(experiment).data)
