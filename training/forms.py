"""Forms for starting runs and sweeps (the admin's add page and actions) and the parsing the
``train`` command shares with them: ``key=value`` settings and ``key=v1,v2`` grids, values read
as JSON when they parse (``0.1`` a number, ``true`` a bool, ``[1, 2]`` a list) and as text
otherwise.

A run is validated by ``training.services.runs.run_create`` / ``sweep_create``, not here: the
forms only shape input, and ``run_errors_to_form`` puts the service's ``RunConfigError.errors``
on the fields they name, so one validation serves the admin, the pages, the API and the command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms

from annotation.models import Campaign, Snapshot
from training.methods import ConfigError, method_module
from training.methods.base import config_help
from training.models import Method, ModelKind, RegisteredModel

# The service's names for a run's inputs (RunConfigError keys that are not config fields).
INPUT_FIELDS = ("method", "snapshot", "campaign", "base_model", "reference_model",
                "reward_models", "grid", "seed")


def parse_value(text: str) -> Any:
    """``text`` as JSON when it parses, else the text itself (``beta=0.1`` is a number,
    ``name=abc`` a string)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_settings(items: Iterable[str]) -> dict[str, Any]:
    """``["beta=0.1", "lr=1e-5"]`` -> ``{"beta": 0.1, "lr": 1e-05}``; ValueError naming the item
    without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=value.")
        out[key.strip()] = parse_value(value)
    return out


def parse_values(text: str) -> list[Any]:
    """Grid values: a JSON list (``[0.1, 0.5]``) or comma-separated values (``0.1, 0.5``)."""
    text = text.strip()
    if text.startswith("["):
        value = parse_value(text)
        if isinstance(value, list):
            return value
    values = [parse_value(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("Give at least one value.")
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["beta=0.05,0.1", "seed=1,2"]`` -> ``{"beta": [0.05, 0.1], "seed": [1, 2]}``."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=v1,v2,...")
        out[key.strip()] = parse_values(values)
    return out


def method_config_help(method: str) -> list[dict[str, Any]]:
    """The method's config fields (name, type, default, help, bounds); [] for an unknown one."""
    try:
        return config_help(method_module(method).Config)
    except (ConfigError, ImportError, AttributeError):
        return []


def numeric_config_fields(method: str) -> list[str]:
    return [f["name"] for f in method_config_help(method) if f["type"] in ("float", "int")]


def run_errors_to_form(form: forms.Form, errors: Mapping[str, list[str]], *,
                       aliases: Mapping[str, str] | None = None) -> None:
    """Put a ``RunConfigError``'s errors on the form: an input on its own field, a config field
    on ``config`` (prefixed with its name), a name in ``aliases`` on the field it maps to."""
    aliases = dict(aliases or {})
    for name, messages in errors.items():
        target = aliases.get(name, name)
        if target in form.fields and target != "config":
            form.add_error(target, list(messages))
        elif "config" in form.fields:
            form.add_error("config", [f"{name}: {m}" for m in messages])
        else:
            form.add_error(None, [f"{name}: {m}" for m in messages])


class ConfigField(forms.JSONField):
    """A JSON object of config fields; empty means the method's defaults."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("initial", dict)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 4, "cols": 60}))
        kwargs.setdefault("help_text", 'A JSON object of config fields, e.g. {"beta": 0.1}; '
                                       "empty = the method's defaults.")
        super().__init__(**kwargs)

    def clean(self, value: Any) -> dict[str, Any]:
        value = super().clean(value)
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("A JSON object, {field: value}.")
        return value


class GridValuesField(forms.CharField):
    def clean(self, value: Any) -> list[Any]:
        value = super().clean(value)
        try:
            return parse_values(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


def _models(kind: str | None = None) -> forms.ModelChoiceField:
    queryset = RegisteredModel.objects.all() if kind is None else \
        RegisteredModel.objects.filter(kind=kind)
    return forms.ModelChoiceField(queryset=queryset, required=False)


class TrainingRunAddForm(forms.Form):
    """The admin's "Add training run": every input of ``run_create``."""

    method = forms.ChoiceField(choices=Method.choices)
    name = forms.CharField(max_length=200, required=False)
    snapshot = forms.ModelChoiceField(queryset=Snapshot.objects.select_related("campaign"),
                                      required=False)
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all(), required=False,
                                      help_text="Only for the AI judge: the campaign it labels.")
    base_model = _models()
    reference_model = _models(ModelKind.POLICY)
    reward_models = forms.ModelMultipleChoiceField(
        queryset=RegisteredModel.objects.filter(kind=ModelKind.REWARD), required=False,
        help_text="Several = an ensemble.")
    seed = forms.IntegerField(initial=0)
    config = ConfigField()


@dataclass(frozen=True)
class ActionSpec:
    """One admin action that starts a run or a sweep from the selected rows."""

    name: str
    title: str
    method: str
    grid_fields: tuple[str, ...] = ()  # preferred grid field names, first present wins
    grid_values: str = ""  # the form's initial values
    seed_grid: bool = False  # the grid is over seeds (an ensemble)
    inputs: tuple[str, ...] = ("snapshot", "base_model")  # the selects the form shows

    @property
    def sweeps(self) -> bool:
        return bool(self.grid_fields) or self.seed_grid


class TrainingActionForm(forms.Form):
    """The intermediate page of a training action: inputs, grid and config of one method."""

    name = forms.CharField(max_length=200, required=False)
    snapshot = forms.ModelChoiceField(queryset=Snapshot.objects.none(), required=False)
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.none(), required=False)
    base_model = forms.ModelChoiceField(queryset=RegisteredModel.objects.none(), required=False,
                                        label="Base model")
    reference_model = forms.ModelChoiceField(queryset=RegisteredModel.objects.none(),
                                             required=False, help_text="Empty = the base.")
    grid_field = forms.ChoiceField(choices=(), required=False, label="Grid over")
    grid_values = GridValuesField(required=False, label="Grid values",
                                  help_text="Comma-separated (0.05, 0.1, 0.5) or a JSON list.")
    seeds = GridValuesField(required=False, label="Seeds",
                            help_text="One member per seed, e.g. 0, 1, 2, 3, 4.")
    seed = forms.IntegerField(initial=0)
    config = ConfigField()

    def __init__(self, *args: Any, spec: ActionSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        self.fields["snapshot"].queryset = Snapshot.objects.select_related("campaign")
        self.fields["campaign"].queryset = Campaign.objects.all()
        base_kinds = getattr(method_module(spec.method), "BASE_KINDS",
                             frozenset({ModelKind.POLICY}))
        self.fields["base_model"].queryset = RegisteredModel.objects.filter(kind__in=base_kinds)
        self.fields["reference_model"].queryset = RegisteredModel.objects.filter(
            kind=ModelKind.POLICY)
        numeric = numeric_config_fields(spec.method)
        choices = [(n, n) for n in numeric] + [("seed", "seed")]
        self.fields["grid_field"].choices = choices
        preferred = next((n for n in spec.grid_fields if n in numeric), choices[0][0])
        self.fields["grid_field"].initial = preferred
        self.fields["grid_values"].initial = spec.grid_values
        self.fields["seeds"].initial = "0, 1, 2, 3, 4"
        keep = {"name", "seed", "config", *spec.inputs}
        if spec.seed_grid:
            keep.add("seeds")
        elif spec.grid_fields:
            keep |= {"grid_field", "grid_values"}
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]
        if "grid_values" in self.fields:
            self.fields["grid_values"].required = True
        if "seeds" in self.fields:
            self.fields["seeds"].required = True

    def grid(self) -> dict[str, list[Any]] | None:
        """The sweep's grid, or None for a single run."""
        data = self.cleaned_data
        if self.spec.seed_grid:
            return {"seed": data["seeds"]}
        if self.spec.grid_fields:
            return {data["grid_field"]: data["grid_values"]}
        return None

    def error_aliases(self) -> dict[str, str]:
        """Errors of the swept field (and ``grid``) belong next to the grid values."""
        if self.spec.seed_grid:
            return {"grid": "seeds"}
        if self.spec.grid_fields and self.is_bound and hasattr(self, "cleaned_data"):
            field = self.cleaned_data.get("grid_field") or ""
            return {"grid": "grid_values", **({field: "grid_values"} if field else {})}
        return {}
