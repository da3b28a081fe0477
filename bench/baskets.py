"""The scale-out and overload benchmarks' own data: basket orders and whether each was returned.

Not the demo's credit data: other feature names, another model, a categorical feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftline.contract import FeatureContract

MODEL = "basket-returns"
CONTRACT = FeatureContract(numeric=("basket_eur", "items", "days_since_last"), categorical=("channel",),
                           classes=("kept", "returned"))
CHANNELS = np.array(["web", "app", "store"])
EPOCH_MS = 1_790_000_000_000
SPACING_MS = 50


def baskets(start: int, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Orders ``start .. start+n`` and their outcome, seeded by position (reproducible)."""
    rng = np.random.default_rng(start)
    frame = pd.DataFrame({"basket_eur": rng.gamma(2.0, 40.0, n), "items": rng.poisson(3, n).astype(float) + 1,
                          "days_since_last": rng.exponential(20.0, n), "channel": rng.choice(CHANNELS, n)})
    odds = 0.02 * frame["basket_eur"] - 0.05 * frame["days_since_last"] + (frame["channel"] == "web") - 1.5
    returned = rng.random(n) < 1 / (1 + np.exp(-odds))
    return frame, np.where(returned, "returned", "kept")


def order_id(run: str, i: int) -> str:
    return f"{run}-order-{i:08d}"


def events_and_labels(run: str, start: int, n: int, labelled_every: int = 2) -> tuple[list[dict], list[dict]]:
    """Feature events of orders ``start .. start+n`` and labels for one order in ``labelled_every``."""
    frame, outcome = baskets(start, n)
    numeric = frame[list(CONTRACT.numeric)].to_numpy().tolist()
    channel = frame["channel"].tolist()
    events, labels = [], []
    for k in range(n):
        i = start + k
        events.append({"model": MODEL, "event_id": order_id(run, i), "entity_id": f"shopper-{i % 997}",
                       "event_time": EPOCH_MS + i * SPACING_MS,
                       "numeric_features": dict(zip(CONTRACT.numeric, numeric[k])),
                       "categorical_features": {"channel": channel[k]}})
        if i % labelled_every == 0:
            labels.append({"model": MODEL, "event_id": order_id(run, i), "label": str(outcome[k]),
                           "label_time": EPOCH_MS + i * SPACING_MS + 60_000})
    return events, labels


def trained_model():
    """The first champion: logistic regression on 5,000 orders drawn like the stream."""
    from driftline.models import DEFAULT_RECIPE
    from driftline.training import train

    frame, labels = baskets(10_000_000, 5000)
    return train(DEFAULT_RECIPE, CONTRACT, frame, labels), DEFAULT_RECIPE
