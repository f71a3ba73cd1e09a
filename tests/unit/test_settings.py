"""Settings' defaults: the worker's data folder, and the live streams' limits
that api/stream.py takes from Settings rather than repeating them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import tempfile
from pathlib import Path

import pytest

from api.stream import StreamConfig
from infra.settings import Settings, default

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("MASTERY_DATA_DIR", "MASTERY_APP_ID", "MASTERY_TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_data_folder_is_outside_the_source_tree_per_worker(home: Path) -> None:
    data_dir = Settings().data_dir
    assert data_dir == home / ".local" / "state" / "mastery" / "mastery-worker"
    assert not data_dir.is_relative_to(ROOT)
    assert Settings(topic_prefix="t").data_dir.name == "t-worker"
    assert Settings(app_id="w-2").data_dir.name == "w-2"


def test_the_data_folder_follows_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MASTERY_APP_ID", "w-3")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Settings().data_dir == tmp_path / "state" / "mastery" / "w-3"
    # a relative XDG_STATE_HOME is ignored, as the XDG spec says
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    assert Settings().data_dir == home / ".local" / "state" / "mastery" / "w-3"
    monkeypatch.setenv("MASTERY_DATA_DIR", str(tmp_path / "mine"))
    assert Settings().data_dir == tmp_path / "mine"


def test_without_a_home_the_data_folder_is_temporary_not_an_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    expected = Path(tempfile.gettempdir()) / "mastery" / "mastery-worker"
    assert Settings().data_dir == expected


def test_stream_config_defaults_are_the_settings_defaults() -> None:
    assert StreamConfig() == StreamConfig.from_settings(Settings.model_construct())


def test_stream_config_takes_every_limit_from_settings() -> None:
    # Settings with every stream_* field off its default: each StreamConfig
    # field but the SSE retry hint must follow.
    fields = Settings.model_fields
    changed = Settings.model_construct(
        **{
            name: field.default * 3
            for name, field in fields.items()
            if name.startswith("stream_")
        }
    )
    config, default = StreamConfig.from_settings(changed), StreamConfig()
    same = {
        f.name
        for f in dataclasses.fields(StreamConfig)
        if getattr(config, f.name) == getattr(default, f.name)
    }
    assert same == {"retry_ms"}


#: (constructor, its parameter, the Settings field it defaults to)
_DEFAULTED = [
    ("api.app:create_app", "max_request_bytes", "max_request_bytes"),
    ("api.app:create_app", "max_ingest_request_bytes", "max_ingest_request_bytes"),
    ("api.app:create_app", "correct_min_score", "ingest_correct_min_score"),
    (
        "api.app:create_app",
        "ingest_max_inflight_per_partner",
        "ingest_max_inflight_per_partner",
    ),
    (
        "api.app:create_app",
        "read_max_inflight_per_partner",
        "read_max_inflight_per_partner",
    ),
    ("api.change_hub:ChangeHub", "queue_size", "stream_queue_events"),
    ("api.auth:BearerAuthenticator", "max_token_bytes", "max_token_bytes"),
    ("api.tokens:TokenVerifier", "leeway_s", "jwt_leeway_s"),
]


@pytest.mark.parametrize(("target", "parameter", "field"), _DEFAULTED)
def test_api_constructors_default_to_the_settings_defaults(
    target: str, parameter: str, field: str
) -> None:
    module, name = target.split(":")
    obj = getattr(importlib.import_module(module), name)
    signature = inspect.signature(obj)
    expected = Settings.model_fields[field].default
    assert expected is not None
    assert signature.parameters[parameter].default == expected


def test_default_refuses_a_computed_default() -> None:
    with pytest.raises(ValueError, match="computed"):
        default("data_dir")
