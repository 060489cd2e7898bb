from __future__ import annotations

from django import forms

from annotation.choices import SCREEN_CHOICES


class JudgmentForm(forms.Form):
    """What the annotator page posts; the choice is in screen order (left/right/tie/both_bad)."""

    token = forms.UUIDField()
    idempotency_key = forms.CharField(max_length=100)
    choice = forms.ChoiceField(choices=[(c, c) for c in SCREEN_CHOICES])
    strength = forms.TypedChoiceField(
        choices=[("1", "slight"), ("2", "clear"), ("3", "strong")], coerce=int, required=False,
        empty_value=None,
    )
    rationale = forms.CharField(max_length=5000, required=False)
    seconds_spent = forms.FloatField(min_value=0, required=False)

    def __init__(self, *args, criteria: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.criteria = criteria or []
        for name in self.criteria:
            self.fields[f"criterion_{name}"] = forms.ChoiceField(
                choices=[(c, c) for c in SCREEN_CHOICES], required=False
            )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("choice") in ("left", "right") and not data.get("strength"):
            self.add_error("strength", "Say how strong the preference is (1, 2 or 3).")
        return data

    def criteria_screen_choices(self) -> dict[str, str]:
        return {
            name: self.cleaned_data[f"criterion_{name}"]
            for name in self.criteria
            if self.cleaned_data.get(f"criterion_{name}")
        }


class SkipForm(forms.Form):
    token = forms.UUIDField()
    reason = forms.CharField(max_length=200)


class ImportUploadForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=None)
    file = forms.FileField(help_text="JSONL, CSV, or a .parquet/.arrow dataset file.")
    skip_invalid = forms.BooleanField(
        required=False, help_text="Import the valid rows and list the refused ones, instead of "
        "refusing the whole file.")
    allow_duplicates = forms.BooleanField(
        required=False, label="Import duplicates too",
        help_text="Rows the campaign already has (same conversation, responses, kind and gold) "
        "are skipped unless this is ticked.")

    def __init__(self, *args, **kwargs) -> None:
        from annotation.models import Campaign

        super().__init__(*args, **kwargs)
        self.fields["campaign"].queryset = Campaign.objects.all()


class SkipUndoForm(forms.Form):
    """The Undo of the skip notice: which skipped assignment to give back."""

    skipped_token = forms.UUIDField()
