"""What every subcommand's options share: defaults read from the config objects, the
``INFERENCE_OPERATOR_<FLAG>`` environment rule, ``--log-level``, help that shows each
default, and the options tables of the docs.

The environment rule: every option ``--some-flag`` of every subcommand may instead be set
by ``INFERENCE_OPERATOR_SOME_FLAG``; a flag on the command line wins. On/off options take
``1/true/yes/on`` or ``0/false/no/off``; repeatable ones a comma-separated list.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "INFERENCE_OPERATOR_"
Config = TypeVar("Config")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_LEVEL = "info"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def config_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of a dataclass or pydantic model: the one source the
    CLI takes its defaults from."""
    if not dataclasses.is_dataclass(cls):
        return cls.model_fields[name].get_default(call_default_factory=True)  # type: ignore[attr-defined]
    field = {field.name: field for field in dataclasses.fields(cls)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    if field.default is dataclasses.MISSING:
        raise ValueError(f"{cls.__name__}.{name} has no default")
    return field.default



def config_from_args(cls: type[Config], args: argparse.Namespace, **given: Any) -> Config:
    """The config dataclass ``cls`` the parsed options describe: each field from the option
    of the same name (a repeatable one as a tuple), ``given`` for the fields no single
    option sets, the default for the rest. So an option and its field cannot drift apart
    (tests/unit/test_cli_defaults.py checks every default round-trips)."""
    values = dict(given)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name not in values and hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)

def optional_path(value: str) -> Path | None:
    """A path option's type: an empty value (``INFERENCE_OPERATOR_STATE_FILE=``) is none."""
    return Path(value) if value else None


def env_name(action: argparse.Action) -> str | None:
    """``INFERENCE_OPERATOR_<FLAG>`` for an option (its first long name); None for the ones
    the rule does not cover (``--help``, aliases whose default is suppressed)."""
    if action.default is argparse.SUPPRESS:
        return None
    long = [option for option in action.option_strings if option.startswith("--")]
    if not long:
        return None
    return ENV_PREFIX + long[0][2:].upper().replace("-", "_")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default and its environment variable."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = super()._get_help_string(action) or ""
        name = env_name(action)
        return f"{help} [env {name}]".lstrip() if name else help


class _Append(argparse._AppendAction):
    """``action="append"`` whose first use on the command line replaces the default (from
    the environment, say) instead of adding to it: a flag wins over the variable."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser. Its options are added by the subcommand's module
    (``add_arguments(parser)``; ``run(args)`` handles it) when the subcommand is used, so
    ``--help`` and the light subcommands never import the gateway or the operator. Then
    each option's default is taken from the environment where its variable is set."""

    def __init__(self, *args: Any, module: str | None = None,
                 environ: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "append", _Append)
        self._module = module
        self._environ = os.environ if environ is None else environ

    def load(self) -> CommandParser:
        if self._module is not None:
            module, self._module = importlib.import_module(self._module), None
            module.add_arguments(self)
            self.set_defaults(handler=module.run)
            for action in self._actions:
                name = env_name(action)
                if name is not None and name in self._environ:
                    action.default = self._from_environment(action, name, self._environ[name])
        return self

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> Any:
        self.load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.load()
        return super().format_usage()

    def format_help(self) -> str:
        self.load()
        return super().format_help()

    def _from_environment(self, action: argparse.Action, name: str, value: str) -> Any:
        try:
            if action.nargs == 0:  # an on/off option
                word = value.strip().lower()
                if word not in _TRUE | _FALSE:
                    raise argparse.ArgumentError(action, "expected true or false")
                given = word in _TRUE
                if isinstance(action, argparse.BooleanOptionalAction):
                    return given
                return action.const if given else action.default
            if isinstance(action, argparse._AppendAction):
                return [self._converted(action, item.strip())
                        for item in value.split(",") if item.strip()]
            return self._converted(action, value)
        except argparse.ArgumentError as error:
            self.error(f"{name}={value!r}: {error.message}")

    def _converted(self, action: argparse.Action, value: str) -> Any:
        converted = self._get_value(action, value)
        self._check_value(action, converted)
        return converted


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS,
                        default=DEFAULT_LOG_LEVEL, metavar="LEVEL",
                        help=f"one of {', '.join(LOG_LEVELS)}")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, CommandParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)

