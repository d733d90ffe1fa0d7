"""Routing configuration as YAML (SPEC §4): good files load, bad ones are refused whole with a message naming the
entry and field, and export → import --replace → export is byte-identical."""

import textwrap

import pytest
import yaml

from routing.config_file import ConfigError, expand_env, export_config, import_config, import_file
from routing.models import Alias, ConfigVersion, Policy, Provider, Route, RoutingSettings

MINIMAL = """
providers:
  - {name: hf, kind: hf, tier: free, base_url: "https://router.huggingface.co/v1", api_key_env: HF_TOKEN}
  - {name: openrouter, kind: openrouter, tier: premium, base_url: "https://openrouter.ai/api/v1"}
aliases:
  - name: rainymodel/auto
    routes:
      - {provider: hf, upstream_model: Qwen/Qwen2.5-72B-Instruct}
      - {provider: openrouter, upstream_model: qwen/qwen-2.5-72b-instruct, input_price_per_mtok: 0.12}
  - name: rainymodel/chat
    routes:
      - {provider: hf, upstream_model: meta-llama/Llama-3.3-70B-Instruct}
policies:
  - {name: auto, tiers: [free, internal, premium], is_default: true}
  - {name: premium, tiers: [premium, free, internal]}
settings:
  catch_all_alias: rainymodel/auto
"""


def refused(text, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        import_config(text, **kwargs)
    return str(caught.value)


# --- good files ---------------------------------------------------------------------------------------------------


def test_defaults_yaml_loads_rainymodels_own_configuration(defaults_loaded):
    assert set(Provider.objects.values_list("name", flat=True)) == {
        "hf",
        "ollama-primary",
        "ollama-secondary",
        "openrouter",
    }
    assert set(Alias.objects.values_list("name", flat=True)) == {
        "rainymodel/auto",
        "rainymodel/chat",
        "rainymodel/code",
        "rainymodel/agent",
        "rainymodel/embed",
    }
    tiers = {p.name: p.tiers for p in Policy.objects.all()}
    assert tiers == {
        "auto": ["free", "internal", "premium"],
        "free": ["free", "internal"],
        "uncensored": ["internal", "free", "premium"],
        "premium": ["premium", "free", "internal"],
    }
    assert Policy.objects.get(is_default=True).name == "auto"
    assert RoutingSettings.load().catch_all_alias.name == "rainymodel/auto"
    assert Provider.objects.get(name="ollama-primary").base_url == "http://127.0.0.1:11434/v1"
    code_models = set(Route.objects.filter(alias__name="rainymodel/code").values_list("upstream_model", flat=True))
    assert {"Qwen/Qwen2.5-Coder-32B-Instruct", "qwen2.5-coder:14b", "qwen2.5-coder:7b"} <= code_models
    assert not Route.objects.filter(provider__tier="premium", input_price_per_mtok=0).exists()
    assert not Route.objects.exclude(provider__tier="premium").exclude(input_price_per_mtok=0).exists()


def test_defaults_round_trip_byte_identical(defaults_loaded):
    first = export_config()
    import_config(first, replace=True)
    assert export_config() == first


def test_round_trip_keeps_every_field_including_odd_values(db):
    import_config(MINIMAL)
    hf = Provider.objects.get(name="hf")
    hf.extra_headers = {"X-Title": "Rainy ${not an env}", "HTTP-Referer": "https://example.test"}
    hf.first_token_timeout_s = 12.5
    hf.save()
    route = Route.objects.get(upstream_model="qwen/qwen-2.5-72b-instruct")
    route.output_price_per_mtok = "0.390001"
    route.context_window = 32768
    route.weight = 3
    route.save()
    first = export_config()
    import_config(first, replace=True)
    assert export_config() == first
    assert Provider.objects.get(name="hf").extra_headers["X-Title"] == "Rainy ${not an env}"
    assert str(Route.objects.get(upstream_model="qwen/qwen-2.5-72b-instruct").output_price_per_mtok) == "0.390001"


def test_defaults_say_which_endpoints_each_route_serves(defaults_loaded):
    def endpoints(alias):
        return {
            (r.provider.name, r.upstream_model): r.endpoints
            for r in Route.objects.filter(alias__name=alias).select_related("provider")
        }

    assert endpoints("rainymodel/embed") == {
        ("ollama-primary", "nomic-embed-text"): ["embeddings"],
        ("ollama-secondary", "nomic-embed-text"): ["embeddings"],
        ("openrouter", "openai/text-embedding-3-small"): ["embeddings"],
    }
    assert str(Route.objects.get(upstream_model="openai/text-embedding-3-small").input_price_per_mtok) == "0.020000"
    code = endpoints("rainymodel/code")
    assert (
        code[("ollama-primary", "qwen2.5-coder:14b")]
        == code[("ollama-secondary", "qwen2.5-coder:7b")]
        == ["chat", "completions"]
    )
    assert code[("hf", "Qwen/Qwen2.5-Coder-32B-Instruct")] == ["chat"]
    assert code[("openrouter", "qwen/qwen-2.5-coder-32b-instruct")] == ["chat"]
    assert set(map(tuple, endpoints("rainymodel/auto").values())) == {()}  # unnamed: every endpoint


def test_endpoints_round_trip_and_are_written_only_when_set(db):
    import_config(MINIMAL)
    import_config("""
aliases:
  - name: rainymodel/embed
    routes:
      - {provider: hf, upstream_model: e5, endpoints: [embeddings]}
      - {provider: openrouter, upstream_model: coder, endpoints: [completions, chat]}
      - {provider: openrouter, upstream_model: all, endpoints: []}
""")
    assert [r.endpoints for r in Route.objects.filter(alias__name="rainymodel/embed").order_by("position")] == [
        ["embeddings"],
        ["chat", "completions"],
        [],
    ]  # one spelling per set: the Endpoint choices' order
    first = export_config()
    assert "endpoints: [embeddings]\n" in first and "endpoints: [chat, completions]\n" in first
    embed = next(a for a in yaml.safe_load(first)["aliases"] if a["name"] == "rainymodel/embed")
    assert [r.get("endpoints") for r in embed["routes"]] == [["embeddings"], ["chat", "completions"], None]
    assert first.count("endpoints:") == 2  # the route serving everything and MINIMAL's routes name none
    import_config(first, replace=True)
    assert export_config() == first
    assert [r.endpoints for r in Route.objects.filter(alias__name="rainymodel/embed").order_by("position")] == [
        ["embeddings"],
        ["chat", "completions"],
        [],
    ]


def test_export_names_every_field_and_never_a_secret(defaults_loaded, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret_value")
    text = export_config()
    assert "hf_very_secret_value" not in text
    for key in (
        "connect_timeout_s:",
        "credit_cooldown_s:",
        "supports_prefill:",
        "weight:",
        "is_default:",
        "catch_all_alias: rainymodel/auto",
        "api_key_env: HF_TOKEN",
    ):
        assert key in text


def test_omitted_fields_take_their_defaults_and_routes_their_list_order(db):
    import_config(MINIMAL)
    hf = Provider.objects.get(name="hf")
    assert (hf.connect_timeout_s, hf.first_token_timeout_s, hf.max_retries, hf.enabled) == (5, 10, 2, True)
    routes = list(Route.objects.filter(alias__name="rainymodel/auto").order_by("position"))
    assert [(r.upstream_model, r.position) for r in routes] == [
        ("Qwen/Qwen2.5-72B-Instruct", 0),
        ("qwen/qwen-2.5-72b-instruct", 1),
    ]
    assert str(routes[1].input_price_per_mtok) == "0.120000"


def test_env_references_are_expanded(db, monkeypatch):
    monkeypatch.setenv("OLLAMA_PRIMARY_URL", "http://gpu-1.internal:11434")
    monkeypatch.setenv("RM_TEST_RETRIES", "4")
    monkeypatch.delenv("RM_TEST_UNSET", raising=False)
    import_config("""
        providers:
          - name: ollama-primary
            kind: ollama
            tier: internal
            base_url: ${OLLAMA_PRIMARY_URL:-http://127.0.0.1:11434}/v1
            max_retries: ${RM_TEST_RETRIES}
            enabled: ${RM_TEST_UNSET:-false}
            extra_headers: {X-Host: "${RM_TEST_UNSET:-default-host}"}
    """)
    ollama = Provider.objects.get(name="ollama-primary")
    assert ollama.base_url == "http://gpu-1.internal:11434/v1"
    assert ollama.max_retries == 4
    assert ollama.enabled is False
    assert ollama.extra_headers == {"X-Host": "default-host"}


def test_expand_env_rules():
    env = {"SET": "value", "EMPTY": ""}
    assert expand_env("a-${SET}-b", env) == "a-value-b"
    assert expand_env("${EMPTY:-fallback}", env) == "fallback"
    assert expand_env("${MISSING:-}", env) == ""
    assert expand_env("$${SET} stays", env) == "${SET} stays"
    assert expand_env("price $5", env) == "price $5"
    with pytest.raises(ValueError, match="MISSING is not set"):
        expand_env("${MISSING}", env)
    with pytest.raises(ValueError, match="malformed"):
        expand_env("${not closed", env)


def test_import_without_replace_keeps_what_the_file_does_not_name(db):
    import_config(MINIMAL)
    import_config("""
        providers:
          - {name: extra, kind: openai, tier: premium, base_url: "https://api.example.test/v1"}
    """)
    assert set(Provider.objects.values_list("name", flat=True)) == {"hf", "openrouter", "extra"}
    assert Alias.objects.count() == 2


def test_import_with_replace_removes_what_the_file_does_not_name(db):
    import_config(MINIMAL)
    summary = import_config(
        """
        providers:
          - {name: hf, kind: hf, tier: free, base_url: "https://router.huggingface.co/v1"}
        aliases:
          - name: rainymodel/auto
            routes: [{provider: hf, upstream_model: m}]
        policies:
          - {name: auto, tiers: [free], is_default: true}
    """,
        replace=True,
    )
    assert list(Provider.objects.values_list("name", flat=True)) == ["hf"]
    assert list(Alias.objects.values_list("name", flat=True)) == ["rainymodel/auto"]
    assert list(Policy.objects.values_list("name", flat=True)) == ["auto"]
    assert RoutingSettings.load().catch_all_alias is None
    assert summary.removed == {"providers": ["openrouter"], "aliases": ["rainymodel/chat"], "policies": ["premium"]}


def test_an_aliases_routes_are_replaced_by_the_files_but_unchanged_ones_keep_their_ids(db):
    import_config(MINIMAL)
    kept = Route.objects.get(upstream_model="Qwen/Qwen2.5-72B-Instruct").id
    import_config("""
        aliases:
          - name: rainymodel/auto
            routes:
              - {provider: hf, upstream_model: Qwen/Qwen2.5-72B-Instruct, weight: 2}
              - {provider: hf, upstream_model: new-model}
    """)
    routes = list(Route.objects.filter(alias__name="rainymodel/auto").order_by("position"))
    assert [r.upstream_model for r in routes] == ["Qwen/Qwen2.5-72B-Instruct", "new-model"]
    assert routes[0].id == kept and routes[0].weight == 2


def test_a_new_default_policy_replaces_the_old_one(db):
    import_config(MINIMAL)
    import_config("policies: [{name: premium, tiers: [premium], is_default: true}]")
    assert list(Policy.objects.filter(is_default=True).values_list("name", flat=True)) == ["premium"]


def test_a_successful_import_bumps_the_config_version_once(db, django_capture_on_commit_callbacks):
    before = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        import_config(MINIMAL)
    assert len(callbacks) == 1
    assert ConfigVersion.objects.get(pk=1).version == before + 1


def test_a_refused_import_does_not_bump_the_version(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(ConfigError):
        import_config("providers: [{name: hf}]")
    assert callbacks == []


# --- bad files ----------------------------------------------------------------------------------------------------

BAD_FILES = {
    "route_to_undefined_provider": (
        """
        aliases:
          - name: rainymodel/auto
            routes: [{provider: hf, upstream_model: m}]
          - name: rainymodel/chat
            routes: [{provider: nope, upstream_model: m}]
        """,
        "aliases[1] (rainymodel/chat) routes[0]: provider 'nope' is not defined",
    ),
    "unknown_top_level_key": ("providerz: []", "unknown top-level key 'providerz'"),
    "unknown_provider_key": (
        "providers: [{name: x, kind: hf, tier: free, base_url: 'http://h/v1', colour: red}]",
        "providers[0] (x): unknown key 'colour'",
    ),
    "unknown_route_key": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, speed: 9}]}]",
        "aliases[0] (a) routes[0]: unknown key 'speed'",
    ),
    "unknown_settings_key": ("settings: {catch_all: rainymodel/auto}", "settings: unknown key 'catch_all'"),
    "undefined_default_policy": (
        "aliases: [{name: a, default_policy: cheap}]",
        "aliases[0] (a) default_policy: policy 'cheap' is not defined",
    ),
    "undefined_catch_all": (
        "settings: {catch_all_alias: rainymodel/nope}",
        "settings catch_all_alias: alias 'rainymodel/nope' is not defined",
    ),
    "two_defaults": (
        "policies: [{name: a, tiers: [free], is_default: true}, {name: b, tiers: [free], is_default: true}]",
        "only one policy may have is_default: true",
    ),
    "unknown_tier": (
        "policies: [{name: a, tiers: [free, gold], is_default: true}]",
        "policies[0] (a) tiers: Unknown tier(s) ['gold']",
    ),
    "provider_bad_tier": (
        "providers: [{name: x, kind: hf, tier: gold, base_url: 'http://h/v1'}]",
        "providers[0] (x) tier: Value 'gold' is not a valid choice.",
    ),
    "provider_url_without_v1": (
        "providers: [{name: x, kind: hf, tier: free, base_url: 'http://h/api'}]",
        "providers[0] (x) base_url: Base URL must end in /v1",
    ),
    "secret_instead_of_env_name": (
        "providers: [{name: x, kind: hf, tier: free, base_url: 'http://h/v1', api_key_env: hf_AbCdEfGh0123456789}]",
        "providers[0] (x) api_key_env: Give the NAME of an environment variable",
    ),
    "wrong_type": (
        "providers: [{name: x, kind: hf, tier: free, base_url: 'http://h/v1', max_retries: many}]",
        "providers[0] (x) max_retries: must be a whole number, not 'many'",
    ),
    "unquoted_number_as_string": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: 7}]}]",
        "aliases[0] (a) routes[0] upstream_model: must be a string",
    ),
    "missing_required_key": (
        "providers: [{name: x, tier: free, base_url: 'http://h/v1'}]",
        "providers[0] (x): missing required key 'kind'",
    ),
    "duplicate_names": (
        "policies: [{name: auto, tiers: [free], is_default: true}, {name: Auto, tiers: [free]}]",
        "policies[1] (Auto): name 'Auto' is already used by policies[0] (auto)",
    ),
    "duplicate_yaml_key": ("providers:\n  - name: x\n    name: y\n", "key 'name' appears twice"),
    "yaml_syntax": ("providers: [\n", "not valid YAML at line 2"),
    "not_a_mapping": ("- providers", "the file must be a mapping"),
    "empty": ("", "the file is empty"),
    "section_not_a_list": ("providers: {name: hf}", "providers: must be a list of entries"),
    "entry_not_a_mapping": ("providers: [hf]", "providers[0]: must be a mapping"),
    "no_default_policy": ("policies: [{name: auto, tiers: [free], is_default: false}]", "no policy is the default"),
    "unset_env": (
        "providers: [{name: x, kind: hf, tier: free, base_url: '${RM_TEST_SURELY_UNSET}/v1'}]",
        "providers[0] (x) base_url: environment variable RM_TEST_SURELY_UNSET is not set",
    ),
    "unknown_endpoint": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, endpoints: [chat, rerank]}]}]",
        "aliases[0] (a) routes[0] endpoints: Unknown endpoint(s) ['rerank']; endpoints are chat, "
        "embeddings, completions",
    ),
    "endpoints_not_a_list": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, endpoints: chat}]}]",
        "aliases[0] (a) routes[0] endpoints: Endpoints must be a list of names",
    ),
    "endpoint_twice": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, endpoints: [chat, chat]}]}]",
        "aliases[0] (a) routes[0] endpoints: Each endpoint may appear only once.",
    ),
    "negative_weight": (
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, weight: 0}]}]",
        "aliases[0] (a) routes[0] weight: Ensure this value is greater than or equal to 1.",
    ),
}


@pytest.mark.parametrize("text, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_naming_the_problem_and_changes_nothing(db, db_fingerprint, text, message):
    import_config(MINIMAL)
    before = db_fingerprint()
    exported = export_config()
    assert message in refused(textwrap.dedent(text))
    assert db_fingerprint() == before
    assert export_config() == exported


def test_a_bad_file_with_replace_changes_nothing(db, db_fingerprint):
    import_config(MINIMAL)
    before = db_fingerprint()
    refused("providers: [{name: x, kind: hf, tier: gold, base_url: 'http://h/v1'}]", replace=True)
    assert db_fingerprint() == before


def test_every_problem_is_reported_at_once(db):
    message = refused("""
providers:
  - {name: x, kind: hf, tier: gold, base_url: "ftp://h"}
aliases:
  - {name: a, routes: [{provider: nope, upstream_model: m}]}
""")
    assert "3 problems" in message
    assert "providers[0] (x) tier" in message
    assert "providers[0] (x) base_url" in message
    assert "aliases[0] (a) routes[0]: provider 'nope' is not defined" in message


def test_a_broken_entry_is_not_also_reported_as_undefined(db):
    message = refused("""
providers:
  - {name: x, kind: hf, tier: gold, base_url: "http://h/v1"}
aliases:
  - {name: a, routes: [{provider: x, upstream_model: m}]}
""")
    assert "tier" in message
    assert "not defined" not in message


def test_a_late_problem_rolls_back_rows_already_written(db, db_fingerprint):
    before = db_fingerprint()
    # Providers and policies are valid and written first; only then is the alias's policy found undefined.
    text = MINIMAL.replace("  - name: rainymodel/chat\n", "  - name: rainymodel/chat\n    default_policy: nope\n")
    assert "aliases[1] (rainymodel/chat) default_policy: policy 'nope' is not defined" in refused(text)
    assert db_fingerprint() == before
    assert not Provider.objects.exists()


def test_unreadable_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        import_file(str(tmp_path / "missing.yaml"))


def test_routes_of_a_refused_alias_are_still_checked(db):
    import_config(MINIMAL)
    message = refused(
        "aliases: [{name: a, default_policy: nope, routes: [{provider: hf, upstream_model: m, weight: 0}]}]"
    )
    assert "aliases[0] (a) default_policy: policy 'nope' is not defined" in message
    assert "aliases[0] (a) routes[0] weight: Ensure this value is greater than or equal to 1." in message
