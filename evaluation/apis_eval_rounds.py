"""REST API for eval rounds (``/api/v1/eval-rounds/``): create, list, read, compute the win
rate. Each view validates its input, calls one service, and serializes; admin and researcher
roles only.

Creating answers 201 with the round; with ``pool`` the simulated annotators have judged it
within the request and its win rate is set. A round that cannot be made (``EvalRoundError``:
a run not succeeded or without samples, a bad pool, ``n_items`` out of range, a taken name)
answers 400 with DRF's field-error body naming each input, and nothing is written. Computing
a round nobody judged yet answers 409.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.errors import ConflictError
from annotation.pagination import LimitOffsetPagination
from annotation.permissions import IsAdminOrResearcher
from annotation.schema import error_responses
from evaluation.eval_rounds import EvalRoundError, eval_round_create, eval_round_result
from evaluation.models import EvalRound
from training.models import TrainingRun


class _EvalRoundSerializer(serializers.ModelSerializer):
    campaign_name = serializers.CharField(source="campaign.name", read_only=True)

    class Meta:
        model = EvalRound
        fields = ["id", "run", "campaign", "campaign_name", "pool", "seed", "n_items",
                  "win_rate", "lo", "hi", "n_judgments", "n_prompts", "computed_at",
                  "created_at"]


class EvalRoundCollectionApi(APIView):
    """``GET``: eval rounds, newest first (``?run=`` one run's). ``POST``: build one from a
    run's samples (201); with ``pool`` it is judged by simulated annotators at once."""

    permission_classes = [IsAdminOrResearcher]
    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        run = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)

    class InputSerializer(serializers.Serializer):
        run = serializers.PrimaryKeyRelatedField(
            queryset=TrainingRun.objects.all(),
            help_text="A succeeded policy run (sft, dpo, rlhf, best_of_n).")
        pool = serializers.CharField(
            required=False, allow_blank=True, allow_null=True, default=None, max_length=200,
            help_text="Simulated pool, e.g. crowd:5 (a run on a world's snapshot); "
                      "empty = people judge.")
        n_items = serializers.IntegerField(required=False, allow_null=True, default=None,
                                           help_text="Prompts, one comparison each; "
                                                     "null = all.")
        overlap = serializers.IntegerField(required=False, default=3,
                                           help_text="Judgments per comparison (1-50).")
        seed = serializers.IntegerField(required=False, default=0)
        name = serializers.CharField(required=False, allow_blank=True, default="",
                                     max_length=100, help_text="The campaign's slug.")

    @extend_schema(parameters=[FilterSerializer], responses=_EvalRoundSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        rounds = EvalRound.objects.select_related("campaign").order_by("-created_at", "-pk")
        if "run" in filters.validated_data:
            rounds = rounds.filter(run_id=filters.validated_data["run"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rounds, request)
        return paginator.get_paginated_response(_EvalRoundSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: _EvalRoundSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            eval_round = eval_round_create(**{**values, "pool": values["pool"] or None},
                                           requested_by=request.user)
        except EvalRoundError as exc:
            raise ValidationError(exc.errors) from exc
        return Response(_EvalRoundSerializer(eval_round).data, status=status.HTTP_201_CREATED)


class EvalRoundDetailApi(APIView):
    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses=_EvalRoundSerializer)
    def get(self, request, round_id: int):
        eval_round = get_object_or_404(EvalRound.objects.select_related("campaign"),
                                       pk=round_id)
        return Response(_EvalRoundSerializer(eval_round).data)


class EvalRoundComputeApi(APIView):
    """Compute the round's win rate from its judgments so far; it becomes the run's r*."""

    permission_classes = [IsAdminOrResearcher]

    @extend_schema(request=None, responses={200: _EvalRoundSerializer, **error_responses(409)})
    def post(self, request, round_id: int):
        eval_round = get_object_or_404(EvalRound.objects.select_related("campaign"),
                                       pk=round_id)
        try:
            eval_round = eval_round_result(eval_round)
        except EvalRoundError as exc:  # nothing judged yet: the state, not the request
            raise ConflictError(exc.message) from exc
        return Response(_EvalRoundSerializer(eval_round).data)
