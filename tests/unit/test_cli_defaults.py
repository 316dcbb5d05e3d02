"""One source per default: the CLI's defaults are the config objects', every option can
come from ``INFERENCE_OPERATOR_<FLAG>``, ``--help`` shows each default, and the docs'
options tables are the parsers rendered. Fast: parsers only, no server."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_devkit.cli import generate as generate_cli
from inference_operator.anthropic import ANTHROPIC_API_URL
from inference_operator.cli import emulator as emulator_cli
from inference_operator.cli import gateway as gateway_cli
from inference_operator.cli import run as run_cli
from inference_operator.cli.main import COMMANDS, build_parser, main
from inference_operator.cli.options import DEFAULT_LOG_LEVEL, env_name, subcommands
from inference_operator.controller.config import OperatorConfig
from inference_operator.emulator.app import Emulator
from inference_operator.emulator.script import Latency
from inference_operator.gateway.http import Limits
from inference_operator.gateway.ratelimit import DEFAULT_QUEUE_CAPACITY
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.server import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str, environ: dict[str, str] | None = None) -> argparse.Namespace:
    return build_parser(environ=environ or {}).parse_args(argv)


def options(command: str) -> list[argparse.Action]:
    parser = subcommands(build_parser(environ={}))[command].load()
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_gateway_defaults_are_gateway_config_defaults() -> None:
    config = gateway_cli.gateway_config(parse("gateway"), admin_token="t")

    assert config == GatewayConfig(admin_token="t")
    # ... which are, in turn, their own sources'.
    assert config.retry == RetryPolicy()
    assert (config.max_body_size, config.body_timeout) == (
        Limits().max_body_size, Limits().body_timeout)
    assert config.queue_capacity == DEFAULT_QUEUE_CAPACITY
    assert config.anthropic_base_url == ANTHROPIC_API_URL


def test_run_defaults_are_operator_config_defaults() -> None:
    args = parse("run")

    assert run_cli.operator_config(args) == OperatorConfig()
    assert args.liveness is None


def test_emulator_defaults_are_the_emulators() -> None:
    emulator = emulator_cli.emulator(parse("emulator"))

    assert (emulator.api_keys, emulator.models) == (Emulator().api_keys, Emulator().models)
    assert emulator.script.latency == Latency()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_the_one_logging_option(command: str) -> None:
    assert parse(command).log_level == DEFAULT_LOG_LEVEL
    assert parse(command, "--log-level", "WARNING").log_level == "warning"
    environ = {"INFERENCE_OPERATOR_LOG_LEVEL": "debug"}
    assert parse(command, environ=environ).log_level == "debug"


def test_run_verbose_is_kept_as_log_level_debug() -> None:
    assert parse("run", "--verbose").log_level == "debug"
    assert parse("run", "--no-verify-upstream").verify_upstream is False


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_its_own_variable(command: str) -> None:
    names = [env_name(action) for action in options(command)]
    named = [n for n in names if n is not None]

    assert len(named) == len(set(named))
    for action, name in zip(options(command), names, strict=True):
        long = next(o for o in action.option_strings if o.startswith("--"))
        if action.default is argparse.SUPPRESS:  # an alias (run --verbose)
            assert name is None
        else:
            assert name == "INFERENCE_OPERATOR_" + long[2:].upper().replace("-", "_")


def test_a_variable_sets_its_flag_and_the_flag_wins() -> None:
    environ = {
        "INFERENCE_OPERATOR_GATEWAY_CONFIG_SECRET": "gw-config",
        "INFERENCE_OPERATOR_RESYNC_SECONDS": "7.5",
        "INFERENCE_OPERATOR_VERIFY_UPSTREAM": "false",
        "INFERENCE_OPERATOR_NAMESPACE": "team-a, team-b",
        "INFERENCE_OPERATOR_GATEWAY_CONFIG_SHARDS": "3",
        "INFERENCE_OPERATOR_GATEWAY_STATUS_URL": "http://127.0.0.1:1, http://127.0.0.1:2",
    }
    args = parse("run", environ=environ)

    assert args.gateway_config_secret == "gw-config"
    assert args.resync_seconds == 7.5
    assert args.verify_upstream is False
    assert args.namespaces == ["team-a", "team-b"]
    assert args.gateway_config_shards == 3
    assert args.gateway_status_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]

    flags = parse("run", "--gateway-config-secret", "other", "-n", "c", "--verify-upstream",
                  environ=environ)
    assert (flags.gateway_config_secret, flags.namespaces, flags.verify_upstream) == (
        "other", ["c"], True)


def test_on_off_and_typed_variables_in_the_gateway() -> None:
    args = parse("gateway", environ={
        "INFERENCE_OPERATOR_CALLER_METRICS_SERVICE_ACCOUNT": "yes",
        "INFERENCE_OPERATOR_PORT": "9300", "INFERENCE_OPERATOR_STATE_FILE": ""})

    assert (args.caller_metrics_service_account, args.port, args.state_file) == (
        True, 9300, None)
    assert parse("gateway", environ={"INFERENCE_OPERATOR_ACCESS_LOG": "0"}).access_log is False


def test_gateway_config_mode_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = gateway_cli.gateway_config(parse(
        "gateway", "--config-secret", "cfg", "--config-shards", "3", "--namespace", "ns",
        "--peers-service", "gw", "--shutdown-delay", "0", "--shutdown-timeout", "7"))
    assert (config.config_secret, config.config_shards, config.namespace, config.peers_service,
            config.shutdown_delay, config.shutdown_timeout) == ("cfg", 3, "ns", "gw", 0.0, 7.0)
    assert config.admin_token == ""
    from_environment = gateway_cli.gateway_config(parse("gateway", environ={
        "INFERENCE_OPERATOR_CONFIG_SECRET": "cfg", "INFERENCE_OPERATOR_SHUTDOWN_DELAY": "1.5"}))
    assert (from_environment.config_secret, from_environment.shutdown_delay) == ("cfg", 1.5)

    # No admin listener, token or state file in config mode: said at once, not ignored.
    token = tmp_path / "token"
    token.write_text("t")
    for given in ("--admin-token-file", "--state-file"):
        assert gateway_cli.run(parse("gateway", "--config-secret", "cfg", given,
                                     str(token))) == 2
        assert f"error: {given} does not go with --config-secret" in capsys.readouterr().err
    assert gateway_cli.run(parse("gateway")) == 2  # standalone still needs its token
    assert "--admin-token-file is required" in capsys.readouterr().err

    # The namespace: the pod's own, else "default".
    from inference_operator.gateway import server

    assert server.GatewayServer(config).namespace == "ns"
    unset = gateway_cli.gateway_config(parse("gateway", "--config-secret", "cfg"))
    monkeypatch.setattr(server, "POD_NAMESPACE_FILE", tmp_path / "absent")
    assert server.GatewayServer(unset).namespace == "default"
    (tmp_path / "namespace").write_text("team-gw\n")
    monkeypatch.setattr(server, "POD_NAMESPACE_FILE", tmp_path / "namespace")
    assert server.GatewayServer(unset).namespace == "team-gw"


def test_gateway_auth_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defaults = gateway_cli.gateway_config(parse("gateway"))
    assert (defaults.auth, defaults.auth_audience, defaults.auth_cache_seconds,
            defaults.auth_cache_size, defaults.api_keys_file, defaults.access_log,
            defaults.caller_metrics_service_account) == (
        "none", "inference-operator", 10.0, 10_000, None, True, False)
    config = gateway_cli.gateway_config(parse(
        "gateway", "--auth", "kubernetes", "--auth-audience", "gw", "--auth-cache-seconds",
        "2.5", "--auth-cache-size", "50", "--caller-metrics-service-account",
        "--no-access-log"))
    assert (config.auth, config.auth_audience, config.auth_cache_seconds,
            config.auth_cache_size, config.caller_metrics_service_account,
            config.access_log) == ("kubernetes", "gw", 2.5, 50, True, False)
    from_environment = gateway_cli.gateway_config(parse("gateway", environ={
        "INFERENCE_OPERATOR_AUTH": "api-keys", "INFERENCE_OPERATOR_API_KEYS_FILE": "k.yaml"}))
    assert (from_environment.auth, from_environment.api_keys_file) == ("api-keys",
                                                                       Path("k.yaml"))

    # Inconsistent combinations: said at start, in the options' words.
    token = tmp_path / "token"
    token.write_text("t")
    keys = tmp_path / "keys.yaml"
    keys.write_text("api_keys: [{id: a, key_hash: plain, inference_ids: ['*']}]")
    for argv, problem in [
        (["--auth", "api-keys"], "--auth api-keys needs --api-keys-file"),
        (["--api-keys-file", str(keys)], "--api-keys-file goes with --auth api-keys"),
        (["--auth", "kubernetes", "--auth-audience", ""], "--auth-audience must not be empty"),
        (["--auth-cache-seconds", "-1"], "--auth-cache-seconds must be 0"),
        (["--auth-cache-size", "0"], "--auth-cache-size must be at least 1"),
        (["--auth-negative-cache-size", "0"], "--auth-negative-cache-size must be at least 1"),
        (["--auth-reviews-in-flight", "0"], "--auth-reviews-in-flight must be at least 1"),
        (["--auth-reviews-per-second", "0"], "--auth-reviews-per-second must be more than 0"),
        (["--auth", "api-keys", "--api-keys-file", str(keys)],
         f"--api-keys-file {keys}: api_keys.0.key_hash"),
        (["--auth", "api-keys", "--api-keys-file", str(tmp_path / "absent")],
         f"--api-keys-file {tmp_path / 'absent'}: cannot read it"),
    ]:
        assert gateway_cli.run(parse("gateway", "--admin-token-file", str(token), *argv)) == 2
        assert f"error: {problem}" in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        parse("gateway", "--auth", "oidc")


@pytest.mark.parametrize(("variable", "value"), [
    ("INFERENCE_OPERATOR_PORT", "nine"),
    ("INFERENCE_OPERATOR_ACCESS_LOG", "maybe"),
    ("INFERENCE_OPERATOR_LOG_LEVEL", "loud"),
])
def test_a_bad_variable_fails_naming_it(
    variable: str, value: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        parse("gateway", environ={variable: value})

    assert exit.value.code == 2
    assert f"{variable}={value!r}" in capsys.readouterr().err


def test_gateway_help_shows_every_default_and_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: nothing wrapped apart
    for name in [n for n in os.environ if n.startswith("INFERENCE_OPERATOR_")]:
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    shown = capsys.readouterr().out

    for action in options("gateway"):
        assert f"(default: {action.default})" in shown, action.option_strings
        assert f"[env {env_name(action)}]" in shown
    assert "(default: 9200)" in shown and f"(default: {ANTHROPIC_API_URL})" in shown


def test_the_light_subcommands_do_not_import_the_gateway() -> None:
    code = ("import sys; from inference_operator.cli.main import main; main(['crd']); "
            "assert 'aiohttp' not in sys.modules and 'kopf' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


@functools.cache
def rendered() -> dict[str, str]:
    return generate_cli.render_all(ROOT)


@pytest.mark.parametrize("relative", sorted(rendered()))
def test_generated_files_but_install_yaml_match_a_fresh_render(relative: str) -> None:
    """The docs' options tables among them (install.yaml: tests/install, it needs helm)."""
    assert (ROOT / relative).read_text() == rendered()[relative], (
        f"{relative} differs from a fresh render; run `make generate`, never edit it")


def test_a_config_mode_gateway_without_cluster_credentials_says_so_and_exits(
        tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    result = subprocess.run(
        [sys.executable, "-m", "inference_operator.cli.main", "gateway", "--config-secret",
         "cfg", "--port", "0"], env={**environ, "KUBECONFIG": str(tmp_path / "none")},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "error: no Kubernetes API credentials" in result.stderr
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr
