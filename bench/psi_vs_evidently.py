"""Windowed PSI: driftline's streaming counter vs Evidently's PSI on the same data.

1e6 rows x 10 numeric features, cut into 10 tumbling windows of 100k rows, each
compared with a 100k-row reference. driftline bins every batch with the
reference profile's fixed quantile bins and computes PSI (plus JS and
Wasserstein) when a window closes; Evidently computes its PSI stattest per
window and feature from the raw reference and window columns (that is how it
works: it re-bins reference and current together for every comparison). The
two use different bins (ours: 10 reference quantiles; Evidently's: Sturges
equal-width over both samples), so only the timings are compared; both flag the
same shifted features.

Evidently is optional and lives in the bench environment only. No release of it
imports with pandas 3 (``import evidently`` fails on a pandas internal it uses),
and releases before 0.6.3 cap numpy below 2.1; it ran here as evidently 0.7.23
with pandas 2.3.3 and numpy 2.4.6. When it is missing or does not import, the
bench says so and reports driftline alone.

Each side is timed as the best of three runs. Run: ``python -m bench.psi_vs_evidently``
(``BENCH_ROWS`` to change the size).
"""

from __future__ import annotations

import os
import time

import numpy as np

from driftline.drift.profile import ReferenceProfile
from driftline.drift import WindowedProfileCounter, WindowSpec

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
FEATURES = 10
WINDOWS = 10
REFERENCE_ROWS = 100_000
BATCH = 10_000  # rows per update(), a typical consumer batch
REPEATS = 3


def make_data(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reference and live columns; features 0-2 shift in the second half of the stream."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(FEATURES)]
    ref = {f: rng.normal(0.0, 1.0 + i / 10, REFERENCE_ROWS) for i, f in enumerate(names)}
    live = {f: rng.normal(0.0, 1.0 + i / 10, ROWS) for i, f in enumerate(names)}
    for f in names[:3]:
        live[f][ROWS // 2:] += 0.5
    return ref, live


def run_driftline(ref, live) -> tuple[float, float, float, list[dict[str, float]]]:
    """Seconds for profile fitting, for counting + statistics, and for counting only."""
    t0 = time.perf_counter()
    profile = ReferenceProfile.fit(numeric=ref)
    fit_s = time.perf_counter() - t0

    def stream(with_stats: bool):
        counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=ROWS // WINDOWS))
        out = []
        for a in range(0, ROWS, BATCH):
            for w in counter.update({f: v[a:a + BATCH] for f, v in live.items()}):
                if with_stats:
                    s = w.stats(profile)
                    out.append({f: st.psi for f, st in s.features.items()})
        return out

    count_s = _best(lambda: stream(False))[0]
    total_s, psis = _best(lambda: stream(True))
    return fit_s, total_s, count_s, psis


def _best(fn, repeats: int = REPEATS):
    """Best time of ``repeats`` runs (the least noisy on a shared machine) and the result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def load_evidently():
    """(psi function, ColumnType, version) or (None, None, reason)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            ver = version("evidently")
        except PackageNotFoundError:
            return None, None, "evidently is not installed (pip install evidently==0.7.23 'pandas<3')"
        try:
            from evidently.legacy.calculations.stattests.psi import _psi
            from evidently.legacy.core import ColumnType
        except ModuleNotFoundError:
            from evidently.calculations.stattests.psi import _psi  # releases before 0.7
            from evidently.core import ColumnType
        return _psi, ColumnType, ver
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot compare"
        import pandas
        return None, None, f"evidently {ver} does not import with pandas {pandas.__version__}: {exc}"


def run_evidently(psi_fn, column_type, ref, live) -> tuple[float, list[dict[str, float]]]:
    import pandas as pd

    ref_s = {f: pd.Series(v) for f, v in ref.items()}
    size = ROWS // WINDOWS

    def windows():
        out = []
        for k in range(WINDOWS):
            row = {}
            for f, v in live.items():
                value, _ = psi_fn(ref_s[f], pd.Series(v[k * size:(k + 1) * size]), column_type.Numerical, 0.1)
                row[f] = float(value)
            out.append(row)
        return out

    return _best(windows)


def run() -> dict:
    ref, live = make_data()
    fit_s, ours_s, count_s, ours_psi = run_driftline(ref, live)
    result: dict = {
        "bench": "psi_vs_evidently",
        "rows": ROWS, "features": FEATURES, "windows": WINDOWS,
        "driftline_s": round(ours_s, 4),
        "driftline_count_only_s": round(count_s, 4),
        "driftline_profile_fit_s": round(fit_s, 4),
        "rows_per_s_per_feature": round(ROWS * FEATURES / ours_s),
        "driftline_shifted_features": sorted({f for w in ours_psi for f, v in w.items() if v >= 0.1}),
    }
    psi_fn, column_type, info = load_evidently()
    if psi_fn is None:
        result.update(evidently=None, evidently_status=info, ratio=None)
        print(f"psi: driftline {ours_s:.3f} s, evidently unavailable ({info}), ratio n/a", flush=True)
        return result
    ev_s, ev_psi = run_evidently(psi_fn, column_type, ref, live)
    ratio = ev_s / ours_s
    result.update(
        evidently=info, evidently_s=round(ev_s, 4), ratio=round(ratio, 2),
        evidently_shifted_features=sorted({f for w in ev_psi for f, v in w.items() if v >= 0.1}),
    )
    print(f"psi: driftline {ours_s:.3f} s, evidently {ev_s:.3f} s, ratio {ratio:.1f}", flush=True)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
