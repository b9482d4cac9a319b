"""The round config's one schema (``rounds.config_schema``): it documents every option the workflow
knows, the defaults and presets fit it, and what it forbids the launch validation refuses."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_the_schema_names_every_option_and_every_active_setting():
    from ml.data.protocols import BUILTIN
    from rounds.config import DEFAULT_CONFIG
    from rounds.config_schema import CONFIG_SCHEMA, PROTOCOLS
    from rounds.pool import SCORING_DEFAULTS

    assert set(CONFIG_SCHEMA["properties"]) == set(DEFAULT_CONFIG)
    assert set(CONFIG_SCHEMA["properties"]["active"]["properties"]) == set(SCORING_DEFAULTS)
    assert CONFIG_SCHEMA["additionalProperties"] is False
    assert CONFIG_SCHEMA["properties"]["active"]["additionalProperties"] is False
    assert list(PROTOCOLS) == list(BUILTIN)  # protocol names come from the ml registry


def test_defaults_and_presets_fit_the_schema():
    from rounds.config import DEFAULT_CONFIG, PRESETS
    from rounds.config_schema import schema_errors
    from rounds.pool import SCORING_DEFAULTS

    assert schema_errors(dict(DEFAULT_CONFIG)) == {}
    assert schema_errors({**DEFAULT_CONFIG, "active": dict(SCORING_DEFAULTS)}) == {}
    for preset in PRESETS.values():
        assert schema_errors(preset) == {}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"nope": 1}, "nope"),
        ({"device": "gpu"}, "device"),
        ({"annotation_deadline_s": True}, "annotation_deadline_s"),  # a boolean is not a number
        ({"poll_interval_s": True}, "poll_interval_s"),
        ({"detectors": ["lae", "lae"]}, "detectors"),
        ({"active": {"bald": {"passes": 1}}}, "active"),
        ({"active": {"queue": "no spaces"}}, "active"),
        ({"active": {"checkpoint": "../escape.pt"}}, "active"),
        ({"active": {"unknown": 1}}, "active"),
        ({"detector_config": {"sjedd": {"freeze_text": "yes"}}}, "detector_config"),
        ({"detector_config": {"other": {}}}, "detector_config"),
        ({"test_datasets": [0]}, "test_datasets"),
        ({"preset": "fast"}, "preset"),
    ],
)
def test_what_the_schema_forbids_the_launch_refuses(config, key):
    from forgery_site.errors import InvalidInput
    from rounds.config import validate_config
    from rounds.config_schema import schema_errors

    assert key in schema_errors(config)
    with pytest.raises(InvalidInput) as refused:
        validate_config(config)
    assert key in refused.value.errors


def test_the_published_schema_is_the_config_schema():
    from drf_spectacular.generators import SchemaGenerator

    from rounds.config_schema import CONFIG_SCHEMA

    schema = SchemaGenerator().get_schema(request=None, public=True)
    body = schema["components"]["schemas"]["RoundLaunchInputRequest"]
    assert body["properties"]["config"]["properties"].keys() == CONFIG_SCHEMA["properties"].keys()
    assert body["properties"]["config"]["additionalProperties"] is False


def test_names_match_the_ml_registries():
    """The schema's names are written out (the web process stays torch-free); they must be the registries'."""
    from ml.active.strategies import available_strategies
    from ml.detectors import available
    from rounds.config_schema import DETECTORS, STRATEGIES

    assert sorted(STRATEGIES) == available_strategies()
    assert set(DETECTORS) <= set(available())
