"""Generated files come from the API models and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inference_devkit.generate import api_files as generate
from inference_operator.api import reference
from inference_operator.api.models import CRD_NAME
from inference_operator.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


GENERATED = sorted([*generate.GENERATED, *generate.SPLICED])


@pytest.mark.parametrize("relative", GENERATED)
def test_checked_in_file_matches_a_fresh_render(relative: str) -> None:
    path = ROOT / relative
    assert path.exists(), f"{relative} is missing; run `make generate`"
    assert path.read_text() == generate.render_all(ROOT)[relative], (
        f"{relative} differs from what the API models render; edit "
        "operator/inference_operator/api/ and run `make generate`, never the file itself"
    )


def test_generate_renders_into_a_fresh_tree(tmp_path: Path) -> None:
    for relative in generate.SPLICED:  # hand-written around their generated block
        (tmp_path / relative).parent.mkdir(parents=True)
        (tmp_path / relative).write_text(
            f"intro\n{reference.BEGIN}\nstale\n{reference.END}\noutro\n"
        )

    written = generate.write_all(tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == GENERATED
    docs = (tmp_path / "docs/api.md").read_text()
    assert docs.startswith(f"intro\n{reference.BEGIN}\n### spec")
    assert "stale" not in docs and docs.endswith(f"{reference.END}\noutro\n")
    assert "| `spec.service_settings.rate_limit.requests_per_minute` | integer |" in docs


def test_crd_subcommand_prints_the_checked_in_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0

    printed = capsys.readouterr().out
    assert printed == (ROOT / "crds" / f"{CRD_NAME}.yaml").read_text()
    assert yaml.safe_load(printed)["kind"] == "CustomResourceDefinition"


def test_crd_subcommand_can_print_the_admission_policies_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["crd", "--with-policies"]) == 0

    kinds = [doc["kind"] for doc in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == [
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ]
