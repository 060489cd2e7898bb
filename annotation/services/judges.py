"""AI judges as annotators: one account per named judge, of kind ``ai_judge``.

An AI judge (``training.methods.ai_judge``) labels a campaign against its written principles
through the same assignment and judgment services a person uses, under its own account. Its
gold accuracy, agreement and biases are then measured by the quality layer like anyone's, and
its labels can be told apart from the people's by the profile's kind.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile
from annotation.services.accounts import Role, user_create_with_role, user_roles

AI_JUDGE_PREFIX = "ai-judge-"


def ai_judge_username(name: str) -> str:
    """The account name of the judge called ``name`` (``ai-judge-<slug>``, at most 150 chars)."""
    slug = slugify(name)[: 150 - len(AI_JUDGE_PREFIX)].strip("-")
    if not slug:
        raise ApplicationError("An AI judge needs a name with a letter or digit.",
                               extra={"field": "name"})
    return AI_JUDGE_PREFIX + slug


def ai_judge_annotator_get_or_create(*, name: str) -> User:
    """Return the AI judge ``ai-judge-<slug of name>``, creating it on first use.

    The account is an annotator (``Role.ANNOTATOR``) of kind ``AnnotatorProfile.Kind.AI_JUDGE``
    that cannot log in (no usable password), made the way simulated annotators are; ``name`` is
    kept as the profile's ``source``. Idempotent, also when two runs create one judge at once.
    Raises ApplicationError when the name has no letter or digit, or when an account of that
    username exists that is not an AI judge (a person's account is never borrowed).
    """
    username = ai_judge_username(name)
    user = User.objects.filter(username=username).select_related("annotator_profile").first()
    if user is None:
        try:
            with transaction.atomic():
                return user_create_with_role(
                    username=username, password=None, role=Role.ANNOTATOR,
                    annotator_kind=AnnotatorProfile.Kind.AI_JUDGE, source=name,
                )
        except (ApplicationError, IntegrityError):
            # A concurrent run made the same judge first: use its account.
            user = User.objects.filter(username=username).select_related(
                "annotator_profile").first()
            if user is None:
                raise
    profile = getattr(user, "annotator_profile", None)
    if (profile is None or profile.kind != AnnotatorProfile.Kind.AI_JUDGE
            or Role.ANNOTATOR not in user_roles(user)):
        raise ApplicationError(f"User {username!r} exists but is not an AI judge.",
                               extra={"field": "name"})
    return user
