"""``inference-operator emulator``: the offline Anthropic Messages API."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web
from pydantic import ValidationError

from inference_operator.cli.options import add_log_level, config_default
from inference_operator.cli.serving import run_until_signal, setup_logging
from inference_operator.emulator.app import Emulator, build_app
from inference_operator.emulator.limits import OrgLimits
from inference_operator.emulator.script import Latency, Script

# The organisation limit options (docs/emulator.md "Organisation rate limits"): any of them
# turns the limits on; an unset per-minute limit is not enforced.
ORG_OPTIONS = {"requests_per_minute": int, "input_tokens_per_minute": int,
               "output_tokens_per_minute": int, "other_user_share": float}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The listener's defaults have no other home: only this command opens it.
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8088, help="listen port")
    parser.add_argument("--api-key", action="append",
                        default=list(config_default(Emulator, "api_keys")),
                        help="a key that is accepted (repeatable); none: any non-empty key")
    parser.add_argument("--model", action="append",
                        default=list(config_default(Emulator, "models")),
                        help="a model id that exists (repeatable); none: any claude-* id")
    parser.add_argument("--first-token-latency", type=float,
                        default=config_default(Latency, "first_token"),
                        help="seconds before each response starts")
    parser.add_argument("--token-latency", type=float,
                        default=config_default(Latency, "per_token"),
                        help="seconds between text deltas")
    for name, kind in ORG_OPTIONS.items():
        parser.add_argument(f"--org-{name.replace('_', '-')}", type=kind, default=None,
                            help=OrgLimits.model_fields[name].description
                            or f"the organisation's {name.replace('_', ' ')}, per model class")
    parser.add_argument("--org-spend-limit-reached", action="store_true",
                        help=OrgLimits.model_fields["spend_limit_reached"].description)
    parser.add_argument("--access-log", action="store_true", help="log every request")
    add_log_level(parser)


def emulator(args: argparse.Namespace) -> Emulator:
    """The emulator the parsed options describe; no option given: ``Emulator()``'s
    settings (tests/unit/test_cli_defaults.py)."""
    org = {name: value for name in ORG_OPTIONS
           if (value := getattr(args, f"org_{name}")) is not None}
    if args.org_spend_limit_reached:
        org["spend_limit_reached"] = True
    return Emulator(
        api_keys=tuple(args.api_key),
        models=tuple(args.model),
        script=Script(Latency(first_token=args.first_token_latency,
                              per_token=args.token_latency)),
        limits=OrgLimits(**org) if org else config_default(Emulator, "limits"),
    )


def run(args: argparse.Namespace) -> int:
    log = logging.getLogger("inference_operator.emulator")
    setup_logging(args.log_level)
    try:
        configured = emulator(args)
    except ValidationError as error:
        log.error("invalid organisation limits: %s", "; ".join(
            f"--org-{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
            for e in error.errors()))
        return 2
    runner = web.AppRunner(build_app(configured), handler_cancellation=True,
                           access_log=log if args.access_log else None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        host, port = runner.addresses[0][:2]
        log.info("Anthropic emulator listening on http://%s:%d (%s)", host, port,
                 f"{len(args.api_key)} key(s)" if args.api_key else "any key accepted")

    return run_until_signal(start, runner.cleanup)
