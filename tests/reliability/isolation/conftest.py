"""The isolation tests drive gateways as tests/gateway does. That folder's helpers import
one another by module name, so it goes on the path; its fixtures for callers checked
against the real API server (tests/gateway/conftest.py, auth_support.py) are shared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "gateway"))

from auth_support import auth_gateway, reviewer, teams  # noqa: F401

from gateway.conftest import admin, emulator, shards  # noqa: F401
