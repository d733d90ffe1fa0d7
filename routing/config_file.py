"""Routing configuration as a YAML file (SPEC §4): `export_config()` writes what the database holds,
`import_config()` loads a file into it.

An import is all-or-nothing. The file is parsed (duplicate keys refused), string values get `${ENV}` and
`${ENV:-default}` expanded, every key and type is checked, references (route → provider, alias → policy,
catch-all → alias) are resolved, and every object is `full_clean`ed and saved inside one transaction. Any
problem refuses the whole file, leaves the database as it was, and is reported naming the entry and the field:
`aliases[1] (rainymodel/chat) routes[0]: provider 'nope' is not defined`.

Each entry in the file defines its object completely: an omitted field takes its default, and an alias's
`routes` list replaces that alias's routes. `replace=True` also removes providers, aliases and policies the file
does not name. Export writes every field in a fixed order (a route's `endpoints` only when it lists some), so
export → import --replace → export is byte-identical.

Every object is saved or deleted one by one (never a queryset update), so the audit trail records each change;
the `routing` command says who made it (audit/history.py).

This module never reads or writes a secret: providers name the environment variable holding theirs
(`api_key_env`); `${ENV}` is expanded only where the file itself writes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError, models, transaction

from routing.config_version import bump_version, single_bump
from routing.models import Alias, Policy, Provider, Route, RoutingSettings

SECTIONS = ("providers", "aliases", "policies", "settings")
SETTINGS_KEYS = ("catch_all_alias",)
HEADER = "# RainyModel routing configuration: `python manage.py routing import FILE [--replace]` loads it.\n"

# `${NAME}` or `${NAME:-default}`; `$${...}` is a literal `${...}` (how export writes a stored "${").
ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class ConfigError(Exception):
    """The file was refused. `problems` lists every problem found, each naming its entry and field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)


@dataclass
class ImportSummary:
    """What an import did, per kind: names created, updated and removed."""

    created: dict[str, list[str]] = field(default_factory=lambda: {"providers": [], "aliases": [], "policies": []})
    updated: dict[str, list[str]] = field(default_factory=lambda: {"providers": [], "aliases": [], "policies": []})
    removed: dict[str, list[str]] = field(default_factory=lambda: {"providers": [], "aliases": [], "policies": []})
    routes: int = 0

    def __str__(self) -> str:
        lines = []
        for kind in ("providers", "aliases", "policies"):
            parts = [f"{len(self.created[kind])} created", f"{len(self.updated[kind])} updated"]
            if self.removed[kind]:
                parts.append(f"{len(self.removed[kind])} removed ({', '.join(self.removed[kind])})")
            lines.append(f"{kind}: {', '.join(parts)}")
        lines.append(f"routes: {self.routes}")
        return "\n".join(lines)


# --- which keys each entry may hold ------------------------------------------------------------------------------


def _fields(model, *, skip=()) -> list[models.Field]:
    """The model's fields as they appear in the file, in model order (relations are written by name)."""
    return [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in skip]


PROVIDER_FIELDS = _fields(Provider)
ALIAS_FIELDS = _fields(Alias)
ROUTE_FIELDS = _fields(Route, skip=("alias",))
POLICY_FIELDS = _fields(Policy)


def _required(f: models.Field) -> bool:
    return not (f.has_default() or f.blank or f.null)


# --- export ------------------------------------------------------------------------------------------------------


class _FlowList(list):
    """A list of scalars written inline: `tiers: [free, internal]`."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        # Indent list items under their key ("providers:\n  - name: hf"), which reads better than PyYAML's default.
        return super().increase_indent(flow, False)


_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _export_value(f: models.Field, value: Any) -> Any:
    if f.is_relation:
        return None if value is None else value.name.replace("${", "$${")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: _export_value(f, value[k]) for k in sorted(value)}  # sorted: PostgreSQL jsonb reorders keys
    if isinstance(value, list):
        items = [_export_value(f, v) for v in value]
        return _FlowList(items) if all(not isinstance(v, (dict, list)) for v in items) else items
    return value


# Written only when set: empty means every endpoint, and configurations that never name one export as before.
OMITTED_WHEN_EMPTY = ("endpoints",)


def _export_entry(obj: models.Model, fields: list[models.Field]) -> dict:
    return {
        f.name: _export_value(f, getattr(obj, f.name))
        for f in fields
        if not (f.name in OMITTED_WHEN_EMPTY and not getattr(obj, f.name))
    }


def export_config() -> str:
    """The whole routing configuration as YAML, every field written, in a stable order."""
    routes_by_alias: dict[int, list[Route]] = {}
    for route in Route.objects.select_related("provider").order_by("position", "id"):
        routes_by_alias.setdefault(route.alias_id, []).append(route)
    aliases = []
    for alias in Alias.objects.select_related("default_policy").order_by("name"):
        entry = _export_entry(alias, ALIAS_FIELDS)
        entry["routes"] = [_export_entry(r, ROUTE_FIELDS) for r in routes_by_alias.get(alias.id, [])]
        aliases.append(entry)
    routing_settings = RoutingSettings.objects.select_related("catch_all_alias").filter(pk=1).first()
    catch_all = routing_settings.catch_all_alias if routing_settings else None
    document = {
        "providers": [_export_entry(p, PROVIDER_FIELDS) for p in Provider.objects.order_by("name")],
        "aliases": aliases,
        "policies": [_export_entry(p, POLICY_FIELDS) for p in Policy.objects.order_by("name")],
        "settings": {"catch_all_alias": catch_all.name.replace("${", "$${") if catch_all else None},
    }
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return HEADER + body


# --- parsing -----------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would silently keep the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in the same mapping", key_node.start_mark
            )
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> dict:
    """The file's top-level mapping, or ConfigError naming the line of a YAML syntax problem."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"not valid YAML{where}: {problem}"]) from None
    if document is None:
        raise ConfigError(["the file is empty; expected a mapping with providers, aliases, policies, settings"])
    if not isinstance(document, dict):
        raise ConfigError(
            [f"the file must be a mapping with keys {', '.join(SECTIONS)}, not a {type(document).__name__}"]
        )
    return document


def expand_env(value: str, environ=None) -> str:
    """Expand `${NAME}` and `${NAME:-default}` (the default is used when NAME is unset or empty).

    Raises ValueError when a `${NAME}` without default names an unset variable, or a `${` is left malformed.
    """
    environ = os.environ if environ is None else environ

    def substitute(match: re.Match) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        current = environ.get(name)
        if default is not None:
            return current if current else default
        if current is None:
            raise ValueError(f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
        return current

    pieces, last = [], 0
    for match in ENV_REFERENCE.finditer(value):
        leftover = value[last : match.start()]
        if "${" in leftover.replace("$${", ""):
            raise ValueError(f"malformed ${{...}} in {value!r}; write ${{NAME}} or ${{NAME:-default}}")
        pieces.append(leftover)
        pieces.append(substitute(match))
        last = match.end()
    tail = value[last:]
    if "${" in tail.replace("$${", ""):
        raise ValueError(f"malformed ${{...}} in {value!r}; write ${{NAME}} or ${{NAME:-default}}")
    pieces.append(tail.replace("$${", "${"))
    return "".join(pieces)


def _expand_deep(value: Any) -> Any:
    if isinstance(value, str):
        return expand_env(value)
    if isinstance(value, list):
        return [_expand_deep(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_deep(v) for k, v in value.items()}
    return value


def _coerce(f: models.Field, value: Any) -> Any:
    """The Python value for field `f`, or ValueError with a message an operator can act on."""
    value = _expand_deep(value)
    if value is None:
        if f.null:
            return None
        raise ValueError("may not be null")
    if f.is_relation or isinstance(f, (models.CharField, models.TextField)):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r} (quote it in YAML)")
        return value
    if isinstance(f, models.BooleanField):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError(f"must be true or false, not {value!r}")
    if isinstance(f, models.IntegerField):
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number, not {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(f"must be a whole number, not {value!r}") from None
    if isinstance(f, (models.FloatField, models.DecimalField)):
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(f"must be a number, not {value!r}")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"must be a number, not {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"must be a finite number, not {value!r}")
        return number if isinstance(f, models.DecimalField) else float(number)
    return value  # JSON fields: their validators check the shape


# --- validation without the database ----------------------------------------------------------------------------


@dataclass
class _Entry:
    where: str  # "providers[0] (hf)", used in every message about this entry
    values: dict[str, Any]  # field name -> value; relations hold the related object's name
    bad_fields: set[str] = field(default_factory=set)  # already reported; left out of full_clean
    valid: bool = True  # False: never saved, but still validated so every problem is reported at once
    routes: list[_Entry] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.values.get("name", "")


@dataclass
class _Plan:
    providers: list[_Entry]
    aliases: list[_Entry]
    policies: list[_Entry]
    settings: dict | None  # None when the file has no `settings`
    # Every name the file declares, valid entries or not, so a reference to a broken entry is not also
    # reported as "not defined".
    declared: dict[str, set[str]]
    problems: list[str]


def _where(section: str, index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{section}[{index}] ({name})" if isinstance(name, str) and name else f"{section}[{index}]"


def _read_entry(
    where: str,
    raw: Any,
    fields: list[models.Field],
    problems: list[str],
    *,
    extra_keys: tuple[str, ...] = (),
    defaults: dict | None = None,
) -> _Entry | None:
    """Check one entry's keys and types (defaults filled in); None when it is not a mapping or has no usable
    name, since nothing else about it can then be named."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of field: value, not {type(raw).__name__}")
        return None
    entry = _Entry(where, {})
    allowed = [f.name for f in fields] + list(extra_keys)
    for key in raw:
        if key not in allowed:
            problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
            entry.valid = False
    for f in fields:
        if f.name in raw:
            try:
                entry.values[f.name] = _coerce(f, raw[f.name])
                continue
            except ValueError as exc:
                problems.append(f"{where} {f.name}: {exc}")
        elif defaults and f.name in defaults:
            entry.values[f.name] = defaults[f.name]
            continue
        elif not _required(f):
            entry.values[f.name] = None if f.is_relation else f.get_default()
            continue
        else:
            problems.append(f"{where}: missing required key {f.name!r}")
        entry.values[f.name] = None if f.is_relation else f.get_default()
        entry.bad_fields.add(f.name)
        entry.valid = False
    if "name" in entry.bad_fields:
        return None
    return entry


def _section(document: dict, key: str, problems: list[str]) -> list:
    value = document.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: must be a list of entries, not {type(value).__name__}")
        return []
    return value


def _check_unique(entries: list[_Entry], section: str, problems: list[str], *, fold_case=False) -> None:
    first: dict[str, str] = {}
    for entry in entries:
        key = entry.name.lower() if fold_case else entry.name
        if key in first:
            problems.append(f"{entry.where}: name {entry.name!r} is already used by {first[key]}")
        else:
            first[key] = entry.where


def build_plan(document: dict) -> _Plan:
    """Check a parsed file without touching the database; the plan carries the problems found so far."""
    problems: list[str] = []
    declared = {}
    for section in ("providers", "aliases", "policies"):
        listed = document.get(section)
        entries = listed if isinstance(listed, list) else []
        names = {e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}
        declared[section] = {n.lower() for n in names} if section == "policies" else names
    for key in document:
        if key not in SECTIONS:
            problems.append(f"unknown top-level key {key!r} (allowed: {', '.join(SECTIONS)})")

    providers = []
    for i, raw in enumerate(_section(document, "providers", problems)):
        where = _where("providers", i, raw)
        entry = _read_entry(where, raw, PROVIDER_FIELDS, problems)
        if entry is not None:
            providers.append(entry)

    policies = []
    for i, raw in enumerate(_section(document, "policies", problems)):
        where = _where("policies", i, raw)
        entry = _read_entry(where, raw, POLICY_FIELDS, problems)
        if entry is not None:
            policies.append(entry)
    defaults = [p for p in policies if p.values["is_default"] is True]
    if len(defaults) > 1:
        problems.append(
            f"policies: only one policy may have is_default: true, found {', '.join(p.where for p in defaults)}"
        )

    aliases = []
    for i, raw in enumerate(_section(document, "aliases", problems)):
        where = _where("aliases", i, raw)
        entry = _read_entry(where, raw, ALIAS_FIELDS, problems, extra_keys=("routes",))
        raw_routes = raw.get("routes") if isinstance(raw, dict) else None
        if raw_routes is not None and not isinstance(raw_routes, list):
            problems.append(f"{where} routes: must be a list of routes, not {type(raw_routes).__name__}")
            raw_routes = []
        routes = []
        for j, raw_route in enumerate(raw_routes or []):
            route_where = f"{where} routes[{j}]"
            # A route without `position` takes its place in the list.
            route = _read_entry(route_where, raw_route, ROUTE_FIELDS, problems, defaults={"position": j})
            if route is not None:
                routes.append(route)
        if entry is not None:
            entry.routes = routes
            aliases.append(entry)

    settings = None
    if "settings" in document:
        raw_settings = document["settings"] or {}
        if not isinstance(raw_settings, dict):
            problems.append(f"settings: must be a mapping, not {type(raw_settings).__name__}")
        else:
            settings = {}
            for key, value in raw_settings.items():
                if key not in SETTINGS_KEYS:
                    problems.append(f"settings: unknown key {key!r} (allowed: {', '.join(SETTINGS_KEYS)})")
                    continue
                try:
                    value = _expand_deep(value)
                except ValueError as exc:
                    problems.append(f"settings {key}: {exc}")
                    continue
                if value is not None and not isinstance(value, str):
                    problems.append(f"settings {key}: must be an alias name or null, not {value!r}")
                    continue
                settings[key] = value

    _check_unique(providers, "providers", problems)
    _check_unique(aliases, "aliases", problems)
    _check_unique(policies, "policies", problems, fold_case=True)  # the snapshot looks policies up lower-cased
    return _Plan(providers, aliases, policies, settings, declared, problems)


# --- applying to the database ------------------------------------------------------------------------------------


def _validation_problems(where: str, exc: ValidationError) -> list[str]:
    if not hasattr(exc, "error_dict"):
        return [f"{where}: {m}" for m in exc.messages]
    problems: list[str] = []
    for name, errors in exc.message_dict.items():
        label = where if name == NON_FIELD_ERRORS else f"{where} {name}"
        problems.extend(f"{label}: {m}" for m in errors)
    return problems


def _clean(obj: models.Model, entry: _Entry, problems: list[str], *, exclude=()) -> bool:
    """full_clean, reporting under the entry's name; True when the entry may be saved."""
    try:
        obj.full_clean(exclude=[*entry.bad_fields, *exclude])
    except ValidationError as exc:
        problems.extend(_validation_problems(entry.where, exc))
        return False
    return entry.valid


def _set_values(obj: models.Model, values: dict, *, relations: dict | None = None) -> None:
    for name, value in values.items():
        if relations and name in relations:
            setattr(obj, name, relations[name])
        else:
            setattr(obj, name, value)


def _apply(plan: _Plan, *, replace: bool) -> ImportSummary:
    """Write the plan inside the caller's transaction, adding to `plan.problems` and going on past them so one
    refusal reports everything; the caller rolls back when there is any problem."""
    summary = ImportSummary()
    problems = plan.problems

    # Providers.
    existing_providers = {p.name: p for p in Provider.objects.all()}
    providers = {} if replace else dict(existing_providers)
    for entry in plan.providers:
        obj = existing_providers.get(entry.name) or Provider()
        _set_values(obj, entry.values)
        if _clean(obj, entry, problems):
            (summary.updated if obj.pk else summary.created)["providers"].append(entry.name)
            obj.save()
            providers[entry.name] = obj

    # Policies. The file's default replaces the database's, so untick the old one before validating.
    existing_policies = {p.name.lower(): p for p in Policy.objects.all()}
    policies = {} if replace else dict(existing_policies)
    new_default = next((e.name for e in plan.policies if e.values["is_default"]), None)
    if new_default is not None:
        # One save each, not update(): the audit trail records saves (audit/history.py), and there is one old default.
        for old_default in Policy.objects.filter(is_default=True).exclude(name__iexact=new_default):
            old_default.is_default = False
            old_default.save(update_fields=["is_default"])
    for entry in plan.policies:
        policy_obj = existing_policies.get(entry.name.lower()) or Policy()
        _set_values(policy_obj, entry.values)
        if _clean(policy_obj, entry, problems):
            (summary.updated if policy_obj.pk else summary.created)["policies"].append(entry.name)
            policy_obj.save()
            policies[entry.name.lower()] = policy_obj

    # Aliases and their routes. Routes are matched to existing ones by provider and model to keep their ids.
    existing_aliases = {a.name: a for a in Alias.objects.all()}
    aliases = {} if replace else dict(existing_aliases)
    for entry in plan.aliases:
        policy_name = entry.values["default_policy"]
        policy = None
        resolved = True
        if policy_name is not None:
            policy = policies.get(policy_name.lower())
            if policy is None:
                resolved = False
                if policy_name.lower() not in plan.declared["policies"]:
                    problems.append(f"{entry.where} default_policy: policy {policy_name!r} is not defined")
        routes = _resolve_routes(entry.routes, providers, plan.declared["providers"], problems)
        alias_obj = existing_aliases.get(entry.name) or Alias()
        _set_values(alias_obj, entry.values, relations={"default_policy": policy})
        if not _clean(alias_obj, entry, problems) or not resolved:
            for route_entry, provider in routes:  # still report what is wrong with the routes
                route = Route(provider=provider)
                _set_values(route, route_entry.values, relations={"provider": provider})
                _clean(route, route_entry, problems, exclude=["alias"])
            continue
        (summary.updated if alias_obj.pk else summary.created)["aliases"].append(entry.name)
        alias_obj.save()
        aliases[entry.name] = alias_obj
        _save_routes(alias_obj, routes, problems)
        summary.routes += len(routes)

    # Settings.
    if plan.settings is not None or replace:
        catch_all_name = (plan.settings or {}).get("catch_all_alias")
        catch_all = None
        if catch_all_name is not None:
            catch_all = aliases.get(catch_all_name)
            if catch_all is None and catch_all_name not in plan.declared["aliases"]:
                problems.append(f"settings catch_all_alias: alias {catch_all_name!r} is not defined")
        routing_settings = RoutingSettings.objects.filter(pk=1).first() or RoutingSettings(pk=1)
        routing_settings.catch_all_alias = catch_all
        if _clean(routing_settings, _Entry("settings", {}), problems):
            routing_settings.save()
    if problems:
        return summary

    if replace:
        named = {e.name for e in plan.aliases}
        for alias in Alias.objects.exclude(name__in=named):
            summary.removed["aliases"].append(alias.name)
            alias.delete()
        named = {e.name for e in plan.providers}
        for provider in Provider.objects.exclude(name__in=named):
            summary.removed["providers"].append(provider.name)
            provider.delete()
        named = {e.name.lower() for e in plan.policies}
        for policy in Policy.objects.all():
            if policy.name.lower() not in named:
                summary.removed["policies"].append(policy.name)
                policy.delete()

    if Policy.objects.exists() and not Policy.objects.filter(is_default=True).exists():
        problems.append("policies: no policy is the default; mark exactly one with is_default: true")
    return summary


def _resolve_routes(
    entries: list[_Entry], providers: dict[str, Provider], declared: set[str], problems: list[str]
) -> list[tuple[_Entry, Provider]]:
    resolved = []
    for entry in entries:
        if "provider" in entry.bad_fields:
            continue
        provider = providers.get(entry.values["provider"])
        if provider is not None:
            resolved.append((entry, provider))
        elif entry.values["provider"] not in declared:
            problems.append(f"{entry.where}: provider {entry.values['provider']!r} is not defined")
    return resolved


def _save_routes(alias: Alias, routes: list[tuple[_Entry, Provider]], problems: list[str]) -> None:
    unmatched = list(alias.routes.all().order_by("position", "id"))
    keep = []
    for entry, provider in routes:
        route = next(
            (
                r
                for r in unmatched
                if r.provider_id == provider.pk and r.upstream_model == entry.values["upstream_model"]
            ),
            None,
        )
        if route is not None:
            unmatched.remove(route)
        else:
            route = Route(alias=alias)
        _set_values(route, entry.values, relations={"provider": provider})
        if _clean(route, entry, problems):
            keep.append(route)
    for route in unmatched:
        route.delete()
    for route in keep:
        route.save()


# --- the entry points -------------------------------------------------------------------------------------------


def import_config(text: str, *, replace: bool = False) -> ImportSummary:
    """Load a YAML routing configuration into the database, all or nothing.

    Raises ConfigError (the database unchanged) when anything in the file is wrong. On success the config
    version is bumped once, after commit, so every worker rebuilds its snapshot.
    """
    plan = build_plan(parse_yaml(text))
    try:
        with single_bump(), transaction.atomic():
            summary = _apply(plan, replace=replace)
            if plan.problems:
                raise ConfigError(plan.problems)  # inside the block: everything written so far rolls back
            transaction.on_commit(bump_version)
    except DatabaseError as exc:  # a constraint full_clean could not see, e.g. a concurrent edit
        raise ConfigError([f"the database refused the change: {exc}"]) from None
    return summary


def import_file(path: str, *, replace: bool = False) -> ImportSummary:
    """`import_config` over a file path ("-" for standard input is handled by the command)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"cannot read {path}: not UTF-8 text"]) from None
    return import_config(text, replace=replace)


__all__ = ["ConfigError", "ImportSummary", "export_config", "expand_env", "import_config", "import_file"]
