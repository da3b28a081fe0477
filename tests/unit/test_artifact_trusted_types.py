"""The allow-list is exact, holds classes only, and covers what driftline's recipes serialize."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pandas as pd
import pytest

from driftline.contract import FeatureContract
from driftline.models import ESTIMATORS, REGRESSORS, build_pipeline
from driftline.registry.artifacts import check_trusted, dumps, named_types
from driftline.registry.trusted_types import TRUSTED_TYPES, never_trusted, validated_extra_types

CONTRACT = FeatureContract(numeric=("a", "b"), categorical=("c",))
REGRESSION_CONTRACT = FeatureContract(numeric=("a", "b"), categorical=("c",), task="regression", classes=())


def training_frame(rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.choice(["x", "y"], rows)})
    frame.loc[::11, "a"] = np.nan  # the imputer has something to do
    return frame, np.where(frame["b"] > 0, "1", "0")


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_recipe_serializes_to_trusted_types_only(estimator):
    frame, target = training_frame()
    contract = CONTRACT
    if estimator in REGRESSORS:  # the regression recipes, fitted on a numeric target
        contract, target = REGRESSION_CONTRACT, frame["b"].to_numpy() * 2.0
    artifact = dumps(build_pipeline({"estimator": estimator, "params": {}}, contract).fit(frame, target))
    names = check_trusted(artifact, estimator)  # raises if any name is missing from the list
    assert set(names) <= TRUSTED_TYPES
    assert "sklearn.pipeline.Pipeline" in names and named_types(artifact) <= TRUSTED_TYPES


def _resolve(name: str):
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def test_the_list_holds_exact_class_names_and_nothing_dangerous():
    assert not [n for n in TRUSTED_TYPES if never_trusted(n)]
    assert not [n for n in TRUSTED_TYPES if "*" in n or n.endswith(".")]
    not_classes = [n for n in TRUSTED_TYPES if not inspect.isclass(_resolve(n))]
    assert not_classes == []


@pytest.mark.parametrize("name", [
    "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "builtins.compile", "builtins.open",
    "os.system", "posix.system", "subprocess.Popen", "operator.attrgetter", "operator.methodcaller",
    "operator.itemgetter", "functools.partial", "pickle.loads", "_pickle.loads", "copyreg._reconstructor",
    "numpy.load", "numpy.frombuffer", "numpy.testing._private.utils.runstring",
])
def test_dangerous_names_are_never_trusted(name):
    assert name not in TRUSTED_TYPES and never_trusted(name)
    with pytest.raises(ValueError, match="never lets an artifact build"):
        validated_extra_types([name])


def test_extra_names_must_be_exact():
    assert validated_extra_types(["mypackage.features.Ratio"]) == {"mypackage.features.Ratio"}
    for bad in ("mypackage.*", "mypackage.", "Ratio", "my package.Ratio", ""):
        with pytest.raises(ValueError, match="exact names"):
            validated_extra_types([bad])
