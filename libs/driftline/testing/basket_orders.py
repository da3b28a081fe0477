"""A model of our own for tests that are not about the demo: basket returns of an online shop.

Two numeric features and one categorical; the label ("returned" or "kept") depends on them
through a logistic link. :data:`STREAM` is the live stream: slicing it again gives the same
records, which is what a client retry re-sends.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftline.contract import FeatureContract

MODEL = "basket-return"
CONTRACT = FeatureContract(numeric=("basket_eur", "items"), categorical=("channel",), classes=("kept", "returned"))
EPOCH_MS = 1_767_225_600_000


def orders(start: int, n: int, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` orders and their labels, seeded by ``seed + start`` (a training set: a far ``start``)."""
    rng = np.random.default_rng(seed + start)
    frame = pd.DataFrame({"basket_eur": rng.gamma(2.0, 40.0, n), "items": rng.integers(1, 9, n).astype(float),
                          "channel": rng.choice(["app", "web", "store"], n)})
    z = 0.02 * (frame["basket_eur"] - 80) + 0.3 * (frame["items"] - 4) - (frame["channel"] == "store")
    return frame, np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "returned", "kept").astype(object)


STREAM = orders(0, 2000)  # the live stream, sliced: a re-sent slice is the same records


def events(start: int, n: int) -> list[dict]:
    """Ingest's JSON events for orders ``start`` .. ``start + n - 1`` of :data:`STREAM`."""
    frame = STREAM[0].iloc[start:start + n]
    return [{"model": MODEL, "event_id": f"order-{i}", "entity_id": f"shop-{i % 7}", "event_time": EPOCH_MS + i * 10,
             "numeric_features": {"basket_eur": float(row.basket_eur), "items": float(row.items)},
             "categorical_features": {"channel": row.channel}}
            for i, row in zip(range(start, start + n), frame.itertuples())]


def labels(start: int, n: int) -> list[dict]:
    """Ingest's JSON labels for the same orders."""
    y = STREAM[1][start:start + n]
    return [{"model": MODEL, "event_id": f"order-{i}", "label": str(v)} for i, v in zip(range(start, start + n), y)]
