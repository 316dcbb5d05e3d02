"""``inference-operator emulator``: the offline Anthropic Messages API."""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[],
                        help="a model id that exists (repeatable; default: any claude-* id)")
    parser.add_argument("--first-token-latency", type=float, default=0.0,
                        help="seconds before each response starts")
    parser.add_argument("--token-latency", type=float, default=0.0,
                        help="seconds between text deltas")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from inference_operator.cli.serving import run_until_signal, setup_logging
    from inference_operator.emulator.app import Emulator, build_app
    from inference_operator.emulator.script import Latency, Script

    log = logging.getLogger("inference_operator.emulator")
    setup_logging(args.log_level)
    emulator = Emulator(
        api_keys=tuple(args.api_key),
        models=tuple(args.model),
        script=Script(Latency(first_token=args.first_token_latency,
                              per_token=args.token_latency)),
    )
    runner = web.AppRunner(build_app(emulator), handler_cancellation=True,
                           access_log=log if args.access_log else None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        host, port = runner.addresses[0][:2]
        log.info("Anthropic emulator listening on http://%s:%d (%s)", host, port,
                 f"{len(args.api_key)} key(s)" if args.api_key else "any key accepted")

    return run_until_signal(start, runner.cleanup)
