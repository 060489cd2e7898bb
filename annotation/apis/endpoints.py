"""REST API: one APIView per operation. Validate, call one service or selector, serialize."""

from __future__ import annotations

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.choices import SCREEN_CHOICES
from annotation.errors import NotFoundError
from annotation.models import Assignment, Campaign, PreferenceExport
from annotation.pagination import LimitOffsetPagination
from annotation.permissions import HasAnyRole, IsAdminOrResearcher, IsAnnotator
from annotation.schema import error_responses
from annotation.services import (
    assignment_issue_next,
    assignment_skip,
    assignment_skip_undo,
    judgment_submit_from_screen,
    preference_export_create,
)
from annotation.services.exports import preference_export_file
from annotation.services.imports import comparisons_import_file


class CampaignListApi(APIView):
    permission_classes = [HasAnyRole]

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Campaign
            fields = ["id", "name", "title", "instructions", "criteria", "overlap", "is_active"]

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        campaigns = Campaign.objects.filter(is_active=True)
        return Response(self.OutputSerializer(campaigns, many=True).data)


class _TurnSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class ComparisonNextApi(APIView):
    """Issue the caller's next comparison, in screen order (left/right). 204 when none is left."""

    permission_classes = [IsAnnotator]

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        turns = _TurnSerializer(many=True)
        left = serializers.CharField(source="left_text")
        right = serializers.CharField(source="right_text")
        criteria = serializers.ListField(child=serializers.CharField())
        expires_at = serializers.CharField()
        context = serializers.ListField(
            child=serializers.CharField(),
            help_text="Passages the prompt came with (markdown); empty when none.")

    @extend_schema(request=None, responses={200: OutputSerializer, 204: None,
                                            **error_responses(400, 403, 409)})
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True)
        assignment = assignment_issue_next(campaign=campaign, annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        view = selectors.comparison_for_annotator(assignment=assignment)
        return Response(self.OutputSerializer(view).data)


class JudgmentSubmitApi(APIView):
    """Submit a judgment for an issued comparison; the same idempotency key gives one judgment."""

    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        token = serializers.UUIDField()
        choice = serializers.ChoiceField(choices=SCREEN_CHOICES,
                                         help_text="Screen order: left, right, tie, both_bad.")
        strength = serializers.IntegerField(min_value=1, max_value=3, required=False,
                                            allow_null=True)
        idempotency_key = serializers.CharField(max_length=100)
        seconds_spent = serializers.FloatField(min_value=0)
        rationale = serializers.CharField(required=False, allow_blank=True, max_length=5000)
        criteria = serializers.DictField(
            child=serializers.ChoiceField(choices=SCREEN_CHOICES), required=False
        )

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        idempotency_key = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(request=InputSerializer, responses={
        201: OutputSerializer,
        200: OpenApiResponse(OutputSerializer, description="The key was seen: the first answer."),
        **error_responses(403, 404, 409, 410),
    })
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        judgment = judgment_submit_from_screen(
            token=v["token"], annotator=request.user, choice=v["choice"],
            strength=v.get("strength"), idempotency_key=v["idempotency_key"],
            seconds_spent=v["seconds_spent"], rationale=v.get("rationale", ""),
            criteria=v.get("criteria", {}),
        )
        if judgment.was_replayed:  # the same key again: the first answer, nothing new
            return Response(self.OutputSerializer(judgment).data, status=status.HTTP_200_OK)
        return Response(self.OutputSerializer(judgment).data, status=status.HTTP_201_CREATED)


def _own_assignment(request, token) -> Assignment:
    """The requesting annotator's assignment with ``token``; a 404 naming the field otherwise
    (someone else's token is not told apart from an unknown one)."""
    assignment = selectors.assignment_get_for_annotator(token=token, annotator=request.user)
    if assignment is None:
        raise NotFoundError("This comparison is not yours.", extra={"field": "token"})
    return assignment


class AssignmentSkipApi(APIView):
    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        token = serializers.UUIDField()
        reason = serializers.CharField(max_length=200)

    @extend_schema(request=InputSerializer, responses={204: None,
                                                       **error_responses(403, 404, 409, 410)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment_skip(assignment=_own_assignment(request, data.validated_data["token"]),
                        annotator=request.user, reason=data.validated_data["reason"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class AssignmentSkipUndoApi(APIView):
    """Give the annotator's latest skip back (the page's Undo): 204, and ``next`` then returns
    that comparison. Only the most recent skip, within two minutes, while nothing was answered
    or skipped since and the comparison still has a free place; the item issued in its place
    goes back to the pool (``assignment_skip_undo``)."""

    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        token = serializers.UUIDField(help_text="The skipped assignment's token.")

    @extend_schema(request=InputSerializer, responses={204: None,
                                                       **error_responses(403, 404, 409)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment_skip_undo(assignment=_own_assignment(request, data.validated_data["token"]),
                             annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class JudgmentListApi(APIView):
    """Current (not superseded) judgments of a campaign, in canonical order. Staff roles only."""

    permission_classes = [IsAdminOrResearcher]
    # Read by the view and by drf-spectacular, which documents the paginated envelope.
    pagination_class = LimitOffsetPagination

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        comparison_id = serializers.IntegerField()
        annotator = serializers.CharField(source="annotator.username")
        choice = serializers.CharField()
        strength = serializers.IntegerField(allow_null=True)
        criteria_choices = serializers.DictField()
        rationale = serializers.CharField()
        seconds_spent = serializers.FloatField()
        a_on_left = serializers.BooleanField()
        supersedes_id = serializers.IntegerField(allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.judgment_list(campaign=campaign), request)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class ComparisonImportApi(APIView):
    """Upload a JSONL, CSV or dataset (.parquet/.arrow) file; all rows import or none do.

    With ``skip_invalid`` the valid rows import and the refused ones come back in ``rejects``
    (line, field, message; the first 100). A row's own preference (chosen/rejected, label) is
    kept as the labels of a dataset annotator: ``source`` when given, else each row's
    ``source``, else the file's name. Rows the campaign already has are skipped and counted in
    ``duplicates`` (200 when nothing was new) unless ``allow_duplicates``.
    """

    permission_classes = [IsAdminOrResearcher]
    parser_classes = [MultiPartParser]
    throttle_scope = "import"  # settings: GAPLAB_THROTTLE_IMPORT, per user

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        format = serializers.ChoiceField(choices=["jsonl", "csv", "dataset"], required=False)
        skip_invalid = serializers.BooleanField(default=False)
        source = serializers.CharField(required=False, max_length=300)
        allow_duplicates = serializers.BooleanField(
            default=False, help_text="Import rows the campaign already has again (by default "
                                     "they are skipped and counted in `duplicates`).")

    class RejectSerializer(serializers.Serializer):
        line = serializers.IntegerField()
        field = serializers.CharField()
        message = serializers.CharField()

    OutputSerializer = inline_serializer("ImportResult", {
        "prompts": serializers.IntegerField(), "responses": serializers.IntegerField(),
        "comparisons": serializers.IntegerField(), "calibration": serializers.IntegerField(),
        "labels": serializers.IntegerField(),
        "label_sources": serializers.DictField(child=serializers.IntegerField()),
        "extra_fields": serializers.DictField(child=serializers.IntegerField()),
        "warnings": serializers.ListField(child=serializers.CharField()),
        "rejected": serializers.IntegerField(),
        "rejects": RejectSerializer(many=True),
        "duplicates": serializers.IntegerField(),
    })

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={201: OutputSerializer,
                   200: OpenApiResponse(OutputSerializer,
                                        description="Every row was already in the campaign: "
                                                    "nothing imported."),
                   **error_responses(400)},
    )
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = comparisons_import_file(
            campaign=campaign, source=v["file"], fmt=v.get("format"),
            skip_invalid=v["skip_invalid"], label_source=v.get("source"),
            allow_duplicates=v["allow_duplicates"],
        )
        body = {**result.__dict__, "rejected": result.rejected,
                "rejects": self.RejectSerializer(result.rejects[:100], many=True).data}
        # A file whose every row the campaign already had created nothing: 200, not 201.
        created = result.prompts > 0
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class _ExportOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = PreferenceExport
        fields = ["id", "campaign", "format", "sources", "status", "attempts", "row_count",
                  "size_bytes", "content_hash", "error", "created_at", "finished_at",
                  "purged_at"]


class PreferenceExportCreateApi(APIView):
    """Queue an export of the campaign's preferences in TRL format (runs on a worker)."""

    permission_classes = [IsAdminOrResearcher]

    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=PreferenceExport.Format.choices,
                                         default=PreferenceExport.Format.JSONL)
        sources = serializers.ChoiceField(
            choices=PreferenceExport.Sources.choices, default=PreferenceExport.Sources.ALL,
            help_text="Whose judgments: people and imported dataset labels, or one of them.")

    # Documented as JSON only: every field has a default, so a form body that parses to
    # nothing would be taken as "{}", which a schema of form bodies cannot express.
    @extend_schema(request={"application/json": InputSerializer},
                   responses={202: _ExportOutputSerializer, **error_responses(429)})
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        export = preference_export_create(campaign=campaign, fmt=data.validated_data["format"],
                                          sources=data.validated_data["sources"],
                                          requested_by=request.user)
        return Response(_ExportOutputSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class PreferenceExportDetailApi(APIView):
    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses=_ExportOutputSerializer)
    def get(self, request, export_id: int):
        export = get_object_or_404(PreferenceExport, pk=export_id)
        return Response(_ExportOutputSerializer(export).data)


class PreferenceExportDownloadApi(APIView):
    """Download a finished JSONL export."""

    permission_classes = [IsAdminOrResearcher]

    @extend_schema(responses={(200, "application/jsonl"): OpenApiResponse(description="JSONL"),
                              **error_responses(410)})
    def get(self, request, export_id: int):
        export = get_object_or_404(PreferenceExport, pk=export_id,
                                   status=PreferenceExport.Status.SUCCEEDED,
                                   format=PreferenceExport.Format.JSONL)
        path = preference_export_file(export=export)  # GoneError (410): purged or missing
        return FileResponse(path.open("rb"), as_attachment=True, filename=path.name,
                            content_type="application/jsonl")
