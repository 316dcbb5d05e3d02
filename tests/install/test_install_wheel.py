"""What the image installs is the product alone: the wheel built from the repository's
pyproject.toml holds no module of the development kit and needs no cryptography."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(out: Path) -> Path:
    # Without build isolation: the test venv has the build backend, and nothing downloads.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, cwd=out)
    (wheel,) = out.glob("inference_operator-*.whl")
    return wheel


def test_the_product_wheel_holds_no_harness_and_needs_no_cryptography(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist")

    modules = [n for n in names if n.endswith(".py")]
    assert not [n for n in modules if not n.startswith("inference_operator/")], modules
    harness = ("controlplane", "devstack", "devkit", "chart.py", "checkout.py", "generate")
    assert not [n for n in modules if any(word in n for word in harness)]
    runtime = [r for r in requires or [] if "extra ==" not in r]
    assert runtime and not [r for r in runtime if r.lower().startswith("cryptography")]


def test_the_product_commands_are_the_ones_the_image_offers() -> None:
    from inference_operator.cli.main import COMMANDS

    assert set(COMMANDS) == {"run", "gateway", "emulator", "crd"}
    assert all(module.startswith("inference_operator.cli.") for module, _ in COMMANDS.values())
