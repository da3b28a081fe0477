"""A pipeline trained elsewhere may read its columns in any order; scoring follows it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftline.contract import FeatureContract
from driftline.models import to_frame

CONTRACT = FeatureContract(numeric=("tenure", "spend"))


def test_columns_follow_the_fitted_order_of_an_outside_pipeline():
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"spend": rng.normal(size=200), "tenure": rng.normal(size=200)})  # not the contract's order
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(train, (train["spend"] > 0).astype(int).astype(str))
    numeric = [{"tenure": 1.0, "spend": 2.0}, {"tenure": -1.0, "spend": -2.0}]

    in_contract_order = to_frame(CONTRACT, numeric, [{}, {}])
    assert list(in_contract_order.columns) == ["tenure", "spend"]
    with pytest.raises(ValueError, match="same order"):  # what the predictor hit before
        pipeline.predict(in_contract_order)
    frame = to_frame(CONTRACT, numeric, [{}, {}], pipeline)
    assert list(frame.columns) == ["spend", "tenure"]
    assert pipeline.predict(frame).tolist() == ["1", "0"]
