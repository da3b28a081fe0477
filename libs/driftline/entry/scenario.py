"""A synthetic credit-default scenario with known drift points, for the demo, tests and benchmarks.

Applicants have income, debt ratio, utilization, ... and a default label drawn
from a logistic model. Two kinds of drift can be switched on at known event
indices: a covariate shift (applicants change: ``utilization`` and
``income`` move) and a concept change (the same applicant now defaults for
different reasons: the weight of ``late_payments`` and ``utilization`` flips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftline.contract import FeatureContract

MODEL = "credit"
NUMERIC = ("income", "debt_ratio", "utilization", "age", "credit_lines", "late_payments", "loan_amount", "tenure_months")
CATEGORICAL = ("region", "employment", "purpose")
CONTRACT = FeatureContract(numeric=NUMERIC, categorical=CATEGORICAL, classes=("0", "1"))

REGIONS = np.array(["north", "south", "east", "west"], dtype=object)
EMPLOYMENT = np.array(["salaried", "self_employed", "unemployed", "retired"], dtype=object)
PURPOSES = np.array(["car", "home", "education", "business", "other"], dtype=object)


@dataclass(frozen=True)
class Batch:
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray  # "0" / "1"
    event_index: np.ndarray


@dataclass(frozen=True)
class CreditScenario:
    """Parameters of the world; ``generate`` draws events ``start .. start+n``.

    Parameters
    ----------
    seed
        Every event index has its own random stream, so any slice is reproducible.
    covariate_shift_at, concept_change_at
        Event index where each drift starts (None: never).
    """

    seed: int = 7
    covariate_shift_at: int | None = None
    concept_change_at: int | None = None

    def generate(self, start: int, n: int) -> Batch:
        rng = np.random.default_rng([self.seed, start, n])
        index = np.arange(start, start + n)
        shifted = self._after(index, self.covariate_shift_at)
        changed = self._after(index, self.concept_change_at)

        income = rng.lognormal(mean=np.where(shifted, 10.6, 10.9), sigma=0.45)
        utilization = np.clip(rng.beta(np.where(shifted, 5.0, 2.0), 5.0), 0, 1)
        debt_ratio = np.clip(rng.normal(0.35, 0.15, n), 0, 2)
        age = np.clip(rng.normal(42, 12, n), 18, 90).round()
        credit_lines = rng.poisson(4, n).astype(float)
        late_payments = rng.poisson(0.6, n).astype(float)
        loan_amount = rng.lognormal(9.5, 0.7, n)
        tenure = rng.integers(0, 240, n).astype(float)
        region = REGIONS[rng.integers(0, len(REGIONS), n)]
        employment = EMPLOYMENT[rng.choice(len(EMPLOYMENT), n, p=[0.6, 0.2, 0.1, 0.1])]
        purpose = PURPOSES[rng.integers(0, len(PURPOSES), n)]

        z = (
            -1.0
            - 1.2 * (np.log(income) - 10.9)
            + 2.0 * (debt_ratio - 0.35)
            + np.where(changed, -2.5, 3.0) * (utilization - 0.3)
            + np.where(changed, -0.2, 0.9) * late_payments
            + np.where(changed, 0.5, 0.0) * (credit_lines - 4)
            - 0.02 * (age - 42)
            + 0.9 * (employment == "unemployed")
        )
        labels = np.where(rng.random(n) < 1 / (1 + np.exp(-3 * z)), "1", "0").astype(object)
        numeric = dict(zip(NUMERIC, (income, debt_ratio, utilization, age, credit_lines, late_payments, loan_amount, tenure)))
        categorical = dict(zip(CATEGORICAL, (region, employment, purpose)))
        return Batch(numeric, categorical, labels, index)

    @staticmethod
    def _after(index: np.ndarray, at: int | None) -> np.ndarray:
        return np.zeros(len(index), dtype=bool) if at is None else index >= at
