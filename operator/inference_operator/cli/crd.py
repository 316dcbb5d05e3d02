"""``inference-operator crd``: prints (or writes) what is rendered from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference_operator.api import generate


def run(args: argparse.Namespace) -> int:
    if args.write:
        for path in generate.write_all(Path(args.write)):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    sys.stdout.write(generate.crd_yaml())
    if args.with_policies:
        sys.stdout.write("---\n" + generate.policies_yaml())
    return 0
