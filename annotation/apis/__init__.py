"""The REST API: ``endpoints`` (one APIView per operation) and ``errors`` (the exception handler
that turns domain errors into 4xx answers). The API classes are re-exported here."""

from __future__ import annotations

from annotation.apis.endpoints import (
    AssignmentSkipApi,
    AssignmentSkipUndoApi,
    CampaignListApi,
    ComparisonImportApi,
    ComparisonNextApi,
    JudgmentListApi,
    JudgmentSubmitApi,
    PreferenceExportCreateApi,
    PreferenceExportDetailApi,
    PreferenceExportDownloadApi,
)

__all__ = [
    "AssignmentSkipApi",
    "AssignmentSkipUndoApi",
    "CampaignListApi",
    "ComparisonImportApi",
    "ComparisonNextApi",
    "JudgmentListApi",
    "JudgmentSubmitApi",
    "PreferenceExportCreateApi",
    "PreferenceExportDetailApi",
    "PreferenceExportDownloadApi",
]
