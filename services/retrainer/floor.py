"""How many labelled rows a retrain request needs before a challenger is trained.

A challenger trained on a tenth of the champion's data loses to it by having
less data, not by being wrong about the new regime; and a re-armed incident
(its earlier challenger rejected or failed) that asks again with the same data
gets the same answer. So the need is:

    base = max(retrain_min_rows, champion floor, the request's min_rows)
    need = min(retrain_max_rows, base × 2^(attempt − 1)), and never below retrain_min_rows

where the champion floor is ``ceil(floor_share × champion's training rows / (1 − holdout_fraction))``:
enough labelled rows that, once the most recent ``holdout_fraction`` is held out,
the challenger trains on at least as many rows as the champion did. (Without the
division a retrained champion would hand a smaller floor to the next one, every
generation 30 % less.) The champion's training rows are read from its lineage:
``train_rows`` (retrainer, ``driftline model register --data``), else ``rows``
(the demo's first model), else ``profile_rows`` (a pipeline trained elsewhere,
registered with its ``--reference`` rows); a champion with none of them has no
floor beyond ``retrain_min_rows``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Lineage keys holding a version's training size, in order of preference.
TRAINING_SIZE_KEYS = ("train_rows", "rows", "profile_rows")

#: Attempts past this one double no further (the cap is reached long before).
MAX_DOUBLINGS = 40


@dataclass(frozen=True)
class RowNeed:
    """Labelled rows a request needs, and where the number comes from."""

    rows: int  # labelled rows needed (training plus holdout)
    champion_rows: int  # the champion's training rows (0: unknown)
    champion_rows_from: str  # the lineage key they were read from, or "" when unknown
    champion_floor: int  # labelled rows that give the challenger as many training rows as the champion had
    request_min_rows: int  # what the request asked for (0: nothing)
    attempt: int
    min_rows: int  # the retrainer's absolute lower bound
    max_rows: int  # the retrainer's cap
    capped: bool  # True when the cap bound the need

    def describe(self) -> str:
        """One line for a decision or a log: the need and its reason."""
        parts = [f"{self.rows} labelled rows needed"]
        if self.champion_floor:
            parts.append(f"champion trained on {self.champion_rows} ({self.champion_rows_from}) -> floor "
                         f"{self.champion_floor}")
        if self.request_min_rows:
            parts.append(f"request asks {self.request_min_rows}")
        if self.attempt > 1:
            parts.append(f"attempt {self.attempt} doubles {self.attempt - 1}x")
        if self.capped:
            parts.append(f"capped at retrain_max_rows {self.max_rows}")
        parts.append(f"retrain_min_rows {self.min_rows}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RowFloor:
    """The labelled rows a retrain request needs (see the module's docstring).

    Parameters
    ----------
    min_rows
        Absolute lower bound (``retrain_min_rows``).
    max_rows
        Cap (``retrain_max_rows``); a request never waits for more than this (unless
        ``min_rows`` is larger, which wins).
    holdout_fraction
        The share of the rows the gate holds out (``retrain_holdout_fraction``).
    champion_share
        Share of the champion's training rows the challenger must train on
        (``retrain_floor_share``); 0 leaves ``min_rows`` and the request alone.

    Examples
    --------
    >>> floor = RowFloor(min_rows=3000, max_rows=50_000, holdout_fraction=0.3)
    >>> floor.need({"train_rows": 7000}).rows  # 7000 training rows once 30 % is held out
    10000
    >>> floor.need({"train_rows": 7000}, attempt=2).rows
    20000
    >>> floor.need({"train_rows": 7000}, attempt=4).rows  # 80,000 capped
    50000
    >>> floor.need({}).rows, floor.need({}, request_min_rows=5000, attempt=2).rows
    (3000, 10000)
    """

    def __init__(self, min_rows: int = 3000, max_rows: int = 50_000, holdout_fraction: float = 0.3,
                 champion_share: float = 1.0):
        if min_rows < 1 or max_rows < 1:
            raise ValueError("min_rows and max_rows must be at least 1")
        if not 0 < holdout_fraction < 1:
            raise ValueError("holdout_fraction must be between 0 and 1")
        if champion_share < 0:
            raise ValueError("champion_share must be 0 or more")
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.holdout_fraction = holdout_fraction
        self.champion_share = champion_share

    @staticmethod
    def champion_rows(lineage: dict[str, Any]) -> tuple[int, str]:
        """The champion's training rows and the lineage key they came from; ``(0, "")`` when unknown."""
        for key in TRAINING_SIZE_KEYS:
            value = lineage.get(key)
            # bool is an int: a lineage flag is not a row count
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return int(value), key
        return 0, ""

    def need(self, champion_lineage: dict[str, Any], *, request_min_rows: int = 0, attempt: int = 1) -> RowNeed:
        """The rows a request with ``request_min_rows`` and ``attempt`` needs against a champion with this lineage."""
        rows, source = self.champion_rows(champion_lineage or {})
        # rounded first: 7000 / 0.7 is 10000.000000000002 in floating point, and needs 10000 rows, not 10001
        floor = math.ceil(round(self.champion_share * rows / (1 - self.holdout_fraction), 6)) if rows else 0
        requested = max(0, int(request_min_rows or 0))
        attempt = max(1, int(attempt or 1))
        base = max(self.min_rows, floor, requested)
        doubled = base * 2 ** min(attempt - 1, MAX_DOUBLINGS)
        needed = max(self.min_rows, min(self.max_rows, doubled))
        return RowNeed(rows=needed, champion_rows=rows, champion_rows_from=source, champion_floor=floor,
                       request_min_rows=requested, attempt=attempt, min_rows=self.min_rows, max_rows=self.max_rows,
                       capped=doubled > self.max_rows and needed == self.max_rows)
