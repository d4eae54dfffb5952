"""docs/study-file.md is the study file's schema as it is: generated from the pydantic models,
every field described, and out of date the moment a field changes without regenerating it."""

from __future__ import annotations

from orchestrator.schema_doc import DOC, PARAMETERS, TRAINER, _models, main, render
from orchestrator.spec import CategoricalParam, FloatParam, IntParam, StudySpec
from trainers.config import PriorConfig, TrainerConfig


def test_the_committed_reference_is_the_schemas_rendering():
    assert DOC.read_text() == render(), "run: python -m orchestrator.schema_doc"


def test_every_field_of_every_study_model_has_a_description():
    models = [m for root in (StudySpec, TrainerConfig) for _, m in _models(root, "")]
    models += [FloatParam, IntParam, CategoricalParam]
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert missing == []


def test_rows_carry_type_bounds_default_and_description():
    text = render()
    for row in (
        "| `trials` | int, ≥ 1 | required | trials of the study (over every run of it) |",
        "| `k_max` | int, ≥ 1 | `1` | pre-allocated mixture components |",
        "| `algorithm` | one of: tpe, cmaes, random, grid | `tpe` |",
        "| `address` | str or none | none | Ray cluster address; none: a local Ray |",
    ):
        assert row in text, row
    for heading in ("## `budget`", "### `imr.mala`", f"## {TRAINER}", f"## {PARAMETERS}"):
        assert f"\n{heading}\n" in text, heading
    trainer = text.split(f"## {TRAINER}")[1]
    assert "| `target` |" not in trainer and "`target`\n" not in trainer  # the study's own


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path, monkeypatch):
    out = tmp_path / "study-file.md"
    out.write_text(render())
    assert main(["--check", "--out", str(out)]) == 0
    field = PriorConfig.model_fields["k_max"]
    monkeypatch.setattr(field, "description", "changed in the model")
    assert main(["--check", "--out", str(out)]) == 1
    assert main(["--out", str(out)]) == 0 and "changed in the model" in out.read_text()
    assert main(["--check", "--out", str(out)]) == 0
