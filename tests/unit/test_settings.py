"""Settings' defaults: the live streams' limits that api/stream.py takes from
Settings rather than repeating them."""

from __future__ import annotations

import dataclasses

from api.stream import StreamConfig
from infra.settings import Settings


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
