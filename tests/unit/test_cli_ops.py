"""The CLI explains itself: --version, environment variables in every --help
(from the Settings fields), one-line errors naming the setting to fix, and a
demo that installs only runtime dependencies."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from app.cli.errors import redact_url
from app.cli.help import COMMAND_SETTINGS, env_name, environment_help
from app.cli.main import build_parser, main
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mastery {version('mastery-stream')}"


def test_every_setting_is_read_by_some_command() -> None:
    listed = {name for names in COMMAND_SETTINGS.values() for name in names}
    assert listed <= set(Settings.model_fields)
    assert set(Settings.model_fields) <= listed


def test_every_setting_has_a_description_for_the_help() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert not missing


def test_every_command_has_its_environment_section() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert commands == set(COMMAND_SETTINGS)


@pytest.mark.parametrize("command", sorted(COMMAND_SETTINGS))
def test_help_lists_variables_with_defaults(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(command, capsys)
    assert "environment (default in brackets):" in text
    fields = Settings.model_fields
    for name in COMMAND_SETTINGS[command]:
        assert re.search(
            rf"^  {re.escape(env_name(name, fields[name]))} \[", text, re.MULTILINE
        ), name


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["dlq", "list"], "MASTERY_KAFKA_SASL_USERNAME"),
        (["model", "trace"], "MASTERY_LOG_FORMAT"),
    ],
)
def test_nested_commands_list_their_variables_too(
    argv: list[str], variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    assert f"  {variable} [" in capsys.readouterr().out


def test_help_shows_defaults_and_descriptions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help("worker", capsys)
    assert "  KAFKA_BOOTSTRAP_SERVERS [unset]\n" in text
    assert "  MASTERY_COMMIT_INTERVAL_S [1.0]\n      how often the worker" in text
    assert (
        "  MASTERY_KAFKA_SECURITY_PROTOCOL [PLAINTEXT] "
        "{PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL}" in text
    )
    api = _help("api", capsys)
    assert "  MASTERY_API_PORT [8080]" in api
    assert "  MASTERY_JWT_HS256_SECRET [unset]" in api
    # `mastery dev` starts its own broker and Redis: it does not read them.
    dev = _help("dev", capsys)
    assert "KAFKA_BOOTSTRAP_SERVERS" not in dev and "REDIS_URL" not in dev


def test_help_text_is_generated_from_the_fields() -> None:
    # A description changed in Settings shows in the help with no other edit.
    description = Settings.model_fields["commit_interval_s"].description or ""
    first_words = " ".join(description.split()[:4])
    assert first_words in environment_help("worker")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASTERY_API_PORT", "eighty")
    code, err = _run(["selfcheck"], capsys)
    assert code == 78
    assert err.startswith("error: invalid setting: MASTERY_API_PORT: ")
    assert len(err.strip().splitlines()) == 1


def test_incomplete_sasl_settings_name_the_missing_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASTERY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    code, err = _run(["dlq", "list"], capsys)
    assert code == 78
    assert "MASTERY_KAFKA_SASL_USERNAME and MASTERY_KAFKA_SASL_PASSWORD" in err


def test_a_missing_tls_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    missing = tmp_path / "ca.pem"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.setenv("MASTERY_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("MASTERY_KAFKA_SSL_CAFILE", str(missing))
    code, err = _run(["dlq", "list"], capsys)
    assert code == 78
    assert err == f"error: MASTERY_KAFKA_SSL_CAFILE: no such file: {missing}\n"


def test_port_in_use_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # not dialled at start
    monkeypatch.setenv("MASTERY_AUTH_MODE", "none")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _run(["api", "--port", str(port)], capsys)
    assert code == 69
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert "MASTERY_API_PORT" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_key_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("MASTERY_JWT_HS256_SECRET", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["api"])
    assert "set MASTERY_JWT_HS256_SECRET or MASTERY_JWT_RS256_PUBLIC_KEY" in str(
        info.value.code
    )
    with pytest.raises(SystemExit) as info:
        main(["token"])
    assert "MASTERY_JWT_HS256_SECRET" in str(info.value.code)


def test_redis_url_passwords_are_not_printed() -> None:
    assert redact_url("redis://u:pw@r:6379/0") == "redis://u:***@r:6379/0"
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"


def test_make_demo_installs_only_runtime_dependencies() -> None:
    # Not the MAKEFLAGS of a `make test` that may be running this test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line]
    assert any(line.rstrip().endswith("install --quiet -e .") for line in installs)
    assert not any("[dev]" in line for line in installs), installs
    assert plan.rstrip().endswith("mastery dev")
