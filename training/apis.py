"""REST API for training runs and sweeps (``/api/v1/training/``): create, list, read, metrics,
cancel. Each view validates its input, calls one service or selector, and serializes.

A run that does not validate (``RunConfigError``) answers 400 with DRF's field-error body:
inputs under their own names (``snapshot``, ``base_model``, ``grid``, ...) and config fields
nested under ``config`` (``{"config": {"beta": ["Must be >= 0.0."]}}``), and nothing is queued:
the service raises before it writes a row or an outbox message.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Campaign, JobStatus, Snapshot
from annotation.pagination import LimitOffsetPagination
from annotation.permissions import IsAdminOrResearcher
from annotation.schema import error_responses
from training.forms import INPUT_FIELDS
from training.models import Method, ModelKind, RegisteredModel, RunMetric, Sweep, TrainingRun
from training.selectors import runs as sr
from training.services.runs import RunConfigError, run_cancel, run_create, sweep_create


def _field_errors(exc: RunConfigError) -> ValidationError:
    """The service's errors as DRF field errors, config fields nested under ``config``."""
    body: dict[str, Any] = {}
    for name, messages in exc.errors.items():
        if name in INPUT_FIELDS:
            body.setdefault(name, []).extend(messages)
        else:
            body.setdefault("config", {})[name] = list(messages)
    return ValidationError(body)


class _RunInputSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=Method.choices)
    config = serializers.DictField(required=False, default=dict,
                                   help_text="The method's config fields; missing ones take "
                                             "their defaults.")
    snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all(),
                                                  required=False, allow_null=True)
    campaign = serializers.PrimaryKeyRelatedField(
        queryset=Campaign.objects.all(), required=False, allow_null=True,
        help_text="The campaign an AI judge labels.")
    base_model = serializers.PrimaryKeyRelatedField(queryset=RegisteredModel.objects.all(),
                                                    required=False, allow_null=True)
    reference_model = serializers.PrimaryKeyRelatedField(
        queryset=RegisteredModel.objects.filter(kind=ModelKind.POLICY), required=False,
        allow_null=True, help_text="The reference policy; the base model when empty.")
    reward_models = serializers.PrimaryKeyRelatedField(
        queryset=RegisteredModel.objects.filter(kind=ModelKind.REWARD), many=True,
        required=False, help_text="Reward model ids; several = an ensemble.")
    seed = serializers.IntegerField(required=False, default=0, min_value=-(2**31),
                                    max_value=2**31 - 1)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


def _create_kwargs(data: dict[str, Any], request) -> dict[str, Any]:
    return {"method": data["method"], "config": data.get("config") or {},
            "snapshot": data.get("snapshot"), "campaign": data.get("campaign"),
            "base_model": data.get("base_model"),
            "reference_model": data.get("reference_model"),
            "reward_models": data.get("reward_models") or [], "seed": data.get("seed") or 0,
            "name": data.get("name") or "", "requested_by": request.user}


class _RunOutputSerializer(serializers.ModelSerializer):
    reward_models = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="Share of steps done in [0, 1]; null while the total is unknown.")
    registered_models = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = ["id", "name", "method", "status", "config", "snapshot", "campaign", "sweep",
                  "base_model", "reference_model", "reward_models", "seed", "step",
                  "total_steps", "progress", "attempts", "max_attempts", "cancel_requested",
                  "error", "result", "registered_models", "code_version", "created_at",
                  "queued_at", "started_at", "heartbeat_at", "finished_at"]

    def get_progress(self, run: TrainingRun) -> float | None:
        return sr.run_progress(run)

    def get_registered_models(self, run: TrainingRun) -> list[int]:
        return list((run.result or {}).get("registered_models", []))


class _RunDetailSerializer(_RunOutputSerializer):
    class Meta(_RunOutputSerializer.Meta):
        fields = [*_RunOutputSerializer.Meta.fields, "log_tail"]


class TrainingRunCollectionApi(APIView):
    """``GET``: runs, newest first (``?method=``, ``?status=``). ``POST``: validate and queue
    one run (on the ``gpu`` queue, through the outbox)."""

    permission_classes = [IsAdminOrResearcher]
    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        method = serializers.ChoiceField(choices=Method.choices, required=False)
        status = serializers.ChoiceField(choices=JobStatus.choices, required=False)

    @extend_schema(parameters=[FilterSerializer], responses=_RunOutputSerializer(many=True))
    def get(self, request):
        # A plain dict: DRF reads ?status= from a QueryDict as absent, the schema as invalid.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        runs = sr.run_list(**filters.validated_data).prefetch_related("reward_models")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(runs, request)
        return paginator.get_paginated_response(_RunOutputSerializer(page, many=True).data)

    @extend_schema(request=_RunInputSerializer, responses={201: _RunDetailSerializer})
    def post(self, request):
        data = _RunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run = run_create(**_create_kwargs(data.validated_data, request))
        except RunConfigError as exc:
            raise _field_errors(exc) from exc
        return Response(_RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses=_RunDetailSerializer)
    def get(self, request, run_id: int):
        run = sr.run_get(run_id=run_id)
        if run is None:
            raise Http404
        return Response(_RunDetailSerializer(run).data)


class TrainingRunMetricsApi(APIView):
    """A run's metric rows in step order, ``?name=`` one metric, ``?after_step=`` only newer
    steps (what a poller asks for)."""

    permission_classes = [IsAdminOrResearcher]
    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        name = serializers.CharField(required=False, max_length=100)
        after_step = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = RunMetric
            fields = ["step", "name", "value"]

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request, run_id: int):
        run = get_object_or_404(TrainingRun, pk=run_id)
        # A plain dict: DRF reads ?status= from a QueryDict as absent, the schema as invalid.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        rows = sr.run_metric_list(run=run, **filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class TrainingRunCancelApi(APIView):
    """Cancel a run: a queued one at once, a running one within a few steps. 409 once ended."""

    permission_classes = [IsAdminOrResearcher]

    @extend_schema(request=None, responses={200: _RunOutputSerializer, **error_responses(409)})
    def post(self, request, run_id: int):
        run = run_cancel(run=get_object_or_404(TrainingRun, pk=run_id))
        return Response(_RunOutputSerializer(run).data)


class _SweepRowSerializer(serializers.Serializer):
    run = serializers.IntegerField(source="run.pk")
    status = serializers.CharField(source="run.status")
    step = serializers.IntegerField(source="run.step")
    point = serializers.DictField(help_text="This child's grid values.")
    kl = serializers.FloatField(allow_null=True, help_text="Final KL(π ‖ π₀), nats.")
    proxy_reward = serializers.FloatField(allow_null=True)
    true_reward = serializers.FloatField(allow_null=True)


class _SweepOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="sweep.pk")
    name = serializers.CharField(source="sweep.name")
    method = serializers.CharField(source="sweep.method")
    snapshot = serializers.IntegerField(source="sweep.snapshot_id", allow_null=True)
    config = serializers.DictField(source="sweep.config")
    grid = serializers.DictField(source="sweep.grid")
    created_at = serializers.DateTimeField(source="sweep.created_at")
    runs = _SweepRowSerializer(many=True, source="rows")


def _sweep_body(sweep: Sweep) -> dict[str, Any]:
    return _SweepOutputSerializer({"sweep": sweep, "rows": sr.sweep_rows(sweep=sweep)}).data


class SweepCreateApi(APIView):
    """Validate and queue one child run per point of ``grid`` ({field: [values]}; the key
    ``seed`` sets each child's seed). All or nothing: any invalid point queues none."""

    permission_classes = [IsAdminOrResearcher]

    class InputSerializer(_RunInputSerializer):
        grid = serializers.DictField(child=serializers.ListField(allow_empty=False),
                                     allow_empty=False)

    @extend_schema(request=InputSerializer, responses={201: _SweepOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            sweep = sweep_create(grid=data.validated_data["grid"],
                                 **_create_kwargs(data.validated_data, request))
        except RunConfigError as exc:
            raise _field_errors(exc) from exc
        return Response(_sweep_body(sweep), status=status.HTTP_201_CREATED)


class SweepDetailApi(APIView):
    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses=_SweepOutputSerializer)
    def get(self, request, sweep_id: int):
        sweep = get_object_or_404(Sweep, pk=sweep_id)
        return Response(_sweep_body(sweep))
