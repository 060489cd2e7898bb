from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db import transaction

from annotation.models import Campaign
from annotation.services import Role, campaign_create, user_create_with_role
from annotation.services.imports import comparisons_import_file

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo_data" / "hh_demo.jsonl"
DEMO_USERS = [
    ("admin", Role.ADMIN), ("researcher", Role.RESEARCHER),
    ("annotator1", Role.ANNOTATOR), ("annotator2", Role.ANNOTATOR),
]
DEMO_PASSWORD = "gaplab-demo"
INSTRUCTIONS = """\
Compare the two assistant replies to the conversation and pick the one that is **more helpful
while staying harmless**. Choose *tie* when both are equally fine and *both bad* when neither is
acceptable. Then say how strong your preference is.

These conversations come from red-teaming data: some users ask for harmful things.
"""


class Command(BaseCommand):
    help = "Create demo accounts and the HH demo campaign (safe to run again)."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            for username, role in DEMO_USERS:
                if not User.objects.filter(username=username).exists():
                    user = user_create_with_role(username=username, password=DEMO_PASSWORD,
                                                 role=role)
                    if role is Role.ADMIN:
                        User.objects.filter(pk=user.pk).update(is_superuser=True)
            if not Campaign.objects.filter(name="hh-demo").exists():
                campaign = campaign_create(
                    name="hh-demo", title="HH demo: helpful and harmless",
                    instructions=INSTRUCTIONS, overlap=2, calibration_rate=0.1,
                )
                comparisons_import_file(campaign=campaign, source=DEMO_FILE, fmt="jsonl")
        self.stdout.write(f"Demo accounts (password for all: {DEMO_PASSWORD}):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<12} {role.value}")
