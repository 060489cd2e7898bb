"""Every state change of the annotation app. Split by entity; import from here."""

from __future__ import annotations

from annotation.services.accounts import Role, user_create_with_role, user_roles
from annotation.services.assignment import (
    assignment_issue_next,
    assignment_reclaim_expired,
    assignment_skip,
    assignment_skip_undo,
)
from annotation.services.campaigns import campaign_create
from annotation.services.comparisons import comparisons_bulk_create
from annotation.services.exports import preference_export_create, preference_export_run
from annotation.services.imports import comparisons_import
from annotation.services.judgments import (
    choice_from_screen,
    judgment_submit,
    judgment_submit_from_screen,
    judgment_supersede,
)
from annotation.services.snapshots import snapshot_create, snapshot_to_dataset

__all__ = [
    "Role",
    "assignment_issue_next",
    "assignment_reclaim_expired",
    "assignment_skip",
    "assignment_skip_undo",
    "campaign_create",
    "choice_from_screen",
    "comparisons_bulk_create",
    "comparisons_import",
    "judgment_submit",
    "judgment_submit_from_screen",
    "judgment_supersede",
    "preference_export_create",
    "preference_export_run",
    "snapshot_create",
    "snapshot_to_dataset",
    "user_create_with_role",
    "user_roles",
]
