"""The chart's monitoring files come from observability/ and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_devkit.cli import generate as generate_cli
from inference_devkit.generate import observability_files as generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(generate.GENERATED))
def test_checked_in_file_matches_a_fresh_render(relative: str) -> None:
    path = ROOT / relative
    assert path.exists(), f"{relative} is missing; run `make generate`"
    assert path.read_text() == generate.render_all()[relative], (
        f"{relative} differs from what operator/inference_operator/observability renders; "
        "edit the package and run `make generate`, never the file itself")


def test_inference_operator_generate_renders_them() -> None:
    rendered = generate_cli.render_all(ROOT)

    assert {path: rendered.get(path) for path in generate.GENERATED} == generate.render_all()
