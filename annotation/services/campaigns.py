from __future__ import annotations

from django.db import transaction

from annotation.models import Campaign


@transaction.atomic
def campaign_create(
    *, name: str, title: str = "", instructions: str = "", criteria: list[str] | None = None,
    overlap: int = 3, calibration_rate: float = 0.1, accuracy_threshold: float = 0.7,
    assignment_ttl_seconds: int = 1800, reshow_rate: float = 0.05, redundancy_cap: int = 0,
) -> Campaign:
    campaign = Campaign(
        name=name, title=title, instructions=instructions, criteria=criteria or [],
        overlap=overlap, calibration_rate=calibration_rate,
        accuracy_threshold=accuracy_threshold, assignment_ttl_seconds=assignment_ttl_seconds,
        reshow_rate=reshow_rate, redundancy_cap=redundancy_cap,
    )
    campaign.full_clean()
    campaign.save()
    return campaign
