"""The annotator page through HTTP: start, submit, skip, GET claims nothing, gold never leaks,
text is inert."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.utils import timezone

from annotation.models import Assignment, Judgment
from annotation.services import judgment_submit, user_create_with_role
from annotation.services.accounts import Role
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


def _token(html: str) -> str:
    return re.search(r'name="token" value="([0-9a-f-]{36})"', html).group(1)


def _start(client, campaign) -> str:
    """Press Start (an htmx POST) and return the panel it swaps in."""
    resp = client.post(f"/annotate/{campaign.pk}/start/", **HTMX)
    assert resp.status_code == 200
    return resp.content.decode()


@pytest.fixture
def rater(client_for, cast):
    return client_for("annotator"), cast["annotator"]


@pytest.mark.django_db
def test_get_claims_nothing_and_offers_start(rater):
    """GET /annotate/<id>/ changes no state: no assignment is issued, a Start form is shown."""
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    for _ in range(2):
        page = client.get(f"/annotate/{campaign.pk}/")
        html = page.content.decode()
        assert page.status_code == 200 and 'id="start-form"' in html
        assert f'action="/annotate/{campaign.pk}/start/"' in html and 'method="post"' in html
        assert 'name="token"' not in html
    assert Assignment.objects.count() == 0


@pytest.mark.django_db
def test_start_claims_one_item_and_get_then_shows_the_held_item(rater):
    client, user = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(3, campaign=campaign)
    token = _token(_start(client, campaign))
    assert Assignment.objects.get().annotator == user
    for _ in range(2):  # reloads show the same item and claim nothing more
        html = client.get(f"/annotate/{campaign.pk}/").content.decode()
        assert _token(html) == token and 'id="start-form"' not in html
    assert _token(_start(client, campaign)) == token  # a second Start returns the held item
    assert Assignment.objects.count() == 1


@pytest.mark.django_db
def test_plain_start_post_redirects_to_the_page_showing_the_item(rater):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory(campaign=campaign)
    resp = client.post(f"/annotate/{campaign.pk}/start/")
    assert resp.status_code == 302 and resp["Location"] == f"/annotate/{campaign.pk}/"
    token = str(Assignment.objects.get().token)
    assert _token(client.get(resp["Location"]).content.decode()) == token


@pytest.mark.django_db
def test_get_does_not_show_an_expired_assignment(rater):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    _start(client, campaign)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    html = client.get(f"/annotate/{campaign.pk}/").content.decode()
    assert 'id="start-form"' in html and 'name="token"' not in html
    assert Assignment.objects.filter(status=Assignment.Status.PENDING).count() == 1  # untouched


@pytest.mark.django_db
def test_start_with_no_work_says_so(rater):
    client, _ = rater
    campaign = CampaignFactory()
    resp = client.post(f"/annotate/{campaign.pk}/start/")
    assert resp.status_code == 200 and "No work left" in resp.content.decode()
    assert Assignment.objects.count() == 0


@pytest.mark.django_db
def test_plain_submit_claims_the_next_item_before_redirecting(rater):
    """Without htmx, the submit POST claims the next item, so the GET after the redirect shows it
    (the GET itself claims nothing)."""
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    token = _token(_start(client, campaign))
    resp = client.post(f"/annotate/{campaign.pk}/submit/",
                       {"token": token, "idempotency_key": token, "choice": "tie"})
    assert resp.status_code == 302
    assert Assignment.objects.filter(status=Assignment.Status.PENDING).count() == 1
    html = client.get(resp["Location"]).content.decode()
    assert _token(html) != token and "1 done" in html


@pytest.mark.django_db
def test_submit_swaps_in_the_next_comparison_in_one_request(rater):
    client, user = rater
    campaign = CampaignFactory(criteria=["honesty"])
    ComparisonFactory.create_batch(3, campaign=campaign)
    _start(client, campaign)
    page = client.get(f"/annotate/{campaign.pk}/")
    assert page.status_code == 200 and b"<html" in page.content
    token = _token(page.content.decode())
    resp = client.post(
        f"/annotate/{campaign.pk}/submit/",
        {"token": token, "idempotency_key": token, "choice": "left", "strength": "3",
         "criterion_honesty": "right", "rationale": "clearer", "seconds_spent": "4.2"},
        **HTMX,
    )
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html  # a fragment, not a page
    assert 'id="annotation-panel"' in html and _token(html) != token
    j = Judgment.objects.get()
    a = j.assignment
    assert j.choice == ("A" if a.a_on_left else "B")
    assert j.criteria_choices == {"honesty": "B" if a.a_on_left else "A"}
    assert (j.strength, j.rationale, j.seconds_spent) == (3, "clearer", 4.2)


@pytest.mark.django_db
def test_double_submit_records_one_judgment(rater):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    token = _token(_start(client, campaign))
    data = {"token": token, "idempotency_key": token, "choice": "tie"}
    client.post(f"/annotate/{campaign.pk}/submit/", data, **HTMX)
    client.post(f"/annotate/{campaign.pk}/submit/", data, **HTMX)
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
def test_missing_strength_is_an_error_in_the_panel(rater):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory(campaign=campaign)
    token = _token(_start(client, campaign))
    resp = client.post(f"/annotate/{campaign.pk}/submit/",
                       {"token": token, "idempotency_key": token, "choice": "left"}, **HTMX)
    assert resp.status_code == 200 and "strong" in resp.content.decode()
    assert _token(resp.content.decode()) == token  # the same item stays
    assert Judgment.objects.count() == 0


@pytest.mark.django_db
def test_skip_with_reason_moves_on_and_no_work_left_is_said(rater):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory(campaign=campaign)
    token = _token(_start(client, campaign))
    resp = client.post(f"/annotate/{campaign.pk}/skip/",
                       {"token": token, "reason": "cannot judge"}, **HTMX)
    assert "No work left" in resp.content.decode()
    assert Assignment.objects.get().skip_reason == "cannot judge"


@pytest.mark.django_db
def test_annotator_cannot_submit_someone_elses_assignment(rater, client_for):
    client, _ = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    token = _token(_start(client, campaign))
    other = user_create_with_role(username="other", password="pw-12345678", role=Role.ANNOTATOR)
    from django.test import Client

    intruder = Client()
    intruder.force_login(other)
    resp = intruder.post(f"/annotate/{campaign.pk}/submit/",
                         {"token": token, "idempotency_key": "x", "choice": "tie"}, **HTMX)
    assert "not yours" in resp.content.decode()
    assert Judgment.objects.count() == 0


def _normalise(html: str, texts: list[str]) -> str:
    for t in texts:
        html = html.replace(t, "TEXT")
    html = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", html)
    html = re.sub(r'(csrf\w*"(: "| value=")|"x-csrftoken": ")[^"]+', r"\1CSRF", html)
    return re.sub(r'<div class="progress".*?</div>', "", html, flags=re.S)


@pytest.mark.django_db
def test_calibration_item_is_indistinguishable_in_html(client_for, cast):
    """The page of a calibration item equals a regular one but for the texts: no kind, no gold,
    nothing saying which side is canonical A."""
    campaign = CampaignFactory(overlap=1, calibration_rate=0.0)
    ComparisonFactory.create_batch(2, campaign=campaign)
    CalibrationFactory(campaign=campaign, gold_choice="B")
    client = client_for("annotator")
    pages = {}
    for rate in (0.0, 1.0):
        campaign.calibration_rate = rate
        campaign.save(update_fields=["calibration_rate"])
        html = client.post(f"/annotate/{campaign.pk}/start/", follow=True).content.decode()
        a = Assignment.objects.get(token=_token(html))
        comparison = a.comparison
        pages[comparison.kind] = _normalise(
            html, [comparison.response_a.text, comparison.response_b.text]
        )
        lowered = html.lower()
        for leak in ("calibration", "gold", "response_a", "response_b", "canonical",
                     "kind", 'value="a"', 'value="b"'):
            assert leak not in lowered, leak
        judgment_submit(assignment=a, annotator=cast["annotator"], choice="tie", strength=None,
                        idempotency_key=str(a.token), seconds_spent=1.0)
    assert set(pages) == {"regular", "calibration"}
    assert pages["regular"] == pages["calibration"]


@pytest.mark.django_db
def test_api_next_of_a_calibration_item_has_the_same_keys_and_no_gold(client_for, cast):
    campaign = CampaignFactory(overlap=1, calibration_rate=1.0)
    ComparisonFactory(campaign=campaign)
    CalibrationFactory(campaign=campaign, gold_choice="A")
    client = client_for("annotator")
    first = client.post(f"/api/campaigns/{campaign.pk}/next/").json()
    a = Assignment.objects.get(token=first["token"])
    assert a.comparison.kind == "calibration"
    assert set(first) == {"token", "turns", "left", "right", "criteria", "expires_at",
                          "context"}
    body = str(first).lower()
    assert "gold" not in body and "calibration" not in body


@pytest.mark.django_db
def test_hostile_text_renders_inert(rater):
    client, _ = rater
    campaign = CampaignFactory(instructions="Read <script>alert('i')</script> carefully")
    ComparisonFactory(
        campaign=campaign,
        prompt__turns=[{"role": "user", "content": "Show code:\n\n```\n<b>x</b>\n```"}],
        response_a__text="<script>alert('xss')</script> hello",
        response_b__text='<img src=x onerror="alert(1)"> [link](javascript:alert(2))',
    )
    _start(client, campaign)
    html = client.get(f"/annotate/{campaign.pk}/").content.decode()
    parser = _TagCollector()
    parser.feed(html.split("<main>", 1)[1])
    assert "script" not in parser.tags and "img" not in parser.tags
    assert not [a for a in parser.attrs if a[0].startswith("on")]
    assert not [a for a in parser.attrs if a[0] == "href" and "javascript" in (a[1] or "")]
    assert "&lt;script&gt;alert('xss')&lt;/script&gt; hello" in html  # shown as text
    assert "<pre><code>&lt;b&gt;x&lt;/b&gt;" in html  # code blocks kept, escaped


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
