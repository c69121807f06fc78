"""The evaluate job's parameters: one source (as before) or a list of models, never both."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.job_params import MAX_EVAL_MODELS, EvaluateModel, EvaluateParams, parse_params


def test_one_source_is_one_row_and_no_source_is_the_base_model() -> None:
    one = parse_params("evaluate", {"source_job_id": 3, "checkpoint_epoch": 2})
    assert isinstance(one, EvaluateParams)
    assert one.rows() == [EvaluateModel(job_id=3, epoch=2)]
    assert EvaluateParams().rows() == [EvaluateModel()]


def test_models_are_the_rows_in_order() -> None:
    params = EvaluateParams.model_validate(
        {"models": [{}, {"job_id": 5, "ema": False}, {"job_id": 6, "epoch": 10}]}
    )
    assert [(m.job_id, m.epoch, m.ema) for m in params.rows()] == [
        (None, None, None),
        (5, None, False),
        (6, 10, None),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"models": [{"job_id": 1}], "source_job_id": 2},
        {"models": [{}] * (MAX_EVAL_MODELS + 1)},
        {"models": [{"job_id": 0}]},
        {"models": [{"name": "x"}]},
        {"confidence": 1.0},
    ],
)
def test_bad_params_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EvaluateParams.model_validate(params)
