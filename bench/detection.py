"""Detection benchmark: every concept detector driftline offers, on streams with known change points.

Each scenario of :mod:`bench.detection_streams` (concept changes from river's SEA,
Agrawal and Hyperplane generators; covariate shifts of 0.1 to 1.0 standard
deviations in one feature) is played through the monitoring loop of
:mod:`bench.detection_loop`: driftline's DriftDetector with its default policy and
windows, labels arriving ``label_delay`` events after their prediction, retrain
requests served by driftline's Retrainer (train, gate, promote). The same streams
(same seeds) run with each detector of ``driftline.drift.detectors.METHODS``.

Measured per scenario and detector:

* **delay**: events from the start of the change to the first retrain request
  (the request is seen at the end of the consumer batch that produced it);
* **missed**: runs without any request after the change;
* **false alarms**: requests before the change (in the scenario runs) and concept
  detections per 1,000,000 labelled events of a stationary stream;
* **requests per incident**: requests from the change to the end of the stream;
* **accuracy**: of the first model on the 2,000 events before the change and on the
  2,000 after it, and of the promoted challenger from its promotion to the end.

Best detector, by this rule: eligible if it has at most ``FALSE_ALARM_CAP`` false
alarms per 1e6 stationary events; among those, the fewest missed concept changes,
then the smallest median delay on concept changes, then the fewest false alarms.

Environment: ``BENCH_DETECTION_SEEDS`` (2), ``BENCH_DETECTION_SLOW_SEEDS`` (1: seeds for
detectors slower than ``SLOW_US_PER_ERROR``, i.e. KSWIN), ``BENCH_DETECTION_STATIONARY``
(1,000,000 events), ``BENCH_DETECTION_BUDGET_S`` (20: seconds per detector on the
stationary stream; a detector that cannot see every event in it is measured on what
it saw and scaled, and the table says so). Run: ``python -m bench detection``.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from bench.detection_loop import (
    LoopConfig,
    LoopResult,
    StationaryCount,
    first_model,
    run_loop,
    stationary_detections,
    stationary_errors,
)
from bench.detection_streams import SCENARIOS, STATIONARY, Scenario
from driftline.drift.detectors import METHODS

SEEDS = int(os.environ.get("BENCH_DETECTION_SEEDS", "2"))
SLOW_SEEDS = int(os.environ.get("BENCH_DETECTION_SLOW_SEEDS", "1"))
STATIONARY_EVENTS = int(os.environ.get("BENCH_DETECTION_STATIONARY", "1000000"))
BUDGET_S = float(os.environ.get("BENCH_DETECTION_BUDGET_S", "20"))
TRAIN_ROWS, PRE, POST = 5000, 4000, 8000
FALSE_ALARM_CAP = 10.0  # per 1e6 stationary labelled events: at 10 events/s, at most one in ~28 h
SLOW_US_PER_ERROR = 100.0  # river's KSWIN runs a KS test per error (~570 us here)
DEFAULT = "ADWIN"  # driftline's default concept detector (DriftDetector, Settings.concept_detectors)
ACCURACY_SPAN = 2000


@dataclass(frozen=True)
class DetectorSummary:
    """One detector's runs over every scenario and seed, and its stationary count."""

    method: str
    stationary: StationaryCount
    runs: list[LoopResult]

    def concept_runs(self) -> list[LoopResult]:
        """The runs of concept-change scenarios (the ones the detector itself must see)."""
        return [r for r in self.runs if _kind(r.stream) == "concept"]

    @property
    def missed_concept(self) -> int:
        return sum(bool(r.missed) for r in self.concept_runs())

    @property
    def missed_all(self) -> int:
        return sum(bool(r.missed) for r in self.runs)

    @property
    def median_delay_concept(self) -> float | None:
        delays = [r.delay for r in self.concept_runs() if r.delay is not None]
        return statistics.median(delays) if delays else None

    @property
    def median_delay_all(self) -> float | None:
        delays = [r.delay for r in self.runs if r.delay is not None]
        return statistics.median(delays) if delays else None

    @property
    def false_alarms_before_change(self) -> int:
        return sum(r.false_alarms for r in self.runs)

    @property
    def requests_per_incident(self) -> float | None:
        detected = [r.requests_after_change for r in self.runs if not r.missed]
        return float(np.mean(detected)) if detected else None

    @property
    def promoted(self) -> int:
        return sum(r.promotion is not None for r in self.runs)


def _kind(stream_name: str) -> str:
    return next(s.kind for s in [*SCENARIOS, STATIONARY] if s.name == stream_name)


def _fmt(value, digits: int = 0, none: str = "–") -> str:
    if value is None:
        return none
    return f"{value:,.{digits}f}"


def accuracies(r: LoopResult) -> tuple[float | None, float | None, float | None]:
    """Accuracy before the change, right after it, and after the promoted retrain.

    Before: the first model on the ``ACCURACY_SPAN`` events before the change. Right after:
    the first model on the ``ACCURACY_SPAN`` events once the change is complete, whether or
    not it still served them (what a user without the loop would get). After the retrain:
    the serving models from the first promotion after the change to the end of the stream.
    """
    before = r.accuracy(r.change_start - ACCURACY_SPAN, r.change_start, first_model=True)
    after = r.accuracy(r.change_end + 1, r.change_end + 1 + ACCURACY_SPAN, first_model=True)
    promotion = r.promotion
    retrained = r.accuracy(promotion.at_event + 1, r.events) if promotion is not None else None
    return before, after, retrained


def run_scenario(scenario: Scenario, seed: int, methods: list[str], config: LoopConfig) -> list[LoopResult]:
    stream = scenario.make(seed, TRAIN_ROWS, PRE, POST)
    champion = first_model(stream)  # one first model for every detector: the same predictions
    return [run_loop(stream, method, config, champion) for method in methods]


def is_slow(method: str) -> bool:
    """Whether river's detector costs more than ``SLOW_US_PER_ERROR`` per error (measured now)."""
    from driftline.drift.detectors import ConceptDriftDetector

    errors = (np.random.default_rng(0).random(2000) < 0.2).astype(float)
    detector = ConceptDriftDetector(method)
    started = time.perf_counter()
    detector.update(errors)
    return (time.perf_counter() - started) / errors.size * 1e6 > SLOW_US_PER_ERROR


def best(summaries: list[DetectorSummary]) -> tuple[str | None, list[str]]:
    """The best detector by the module's rule, and the eligible ones."""
    eligible = [s for s in summaries if s.runs and s.stationary.per_1e6 <= FALSE_ALARM_CAP]
    if not eligible:
        return None, []
    ranked = sorted(eligible, key=lambda s: (
        s.missed_concept / max(len(s.concept_runs()), 1),
        s.median_delay_concept if s.median_delay_concept is not None else float("inf"),
        s.stationary.per_1e6))
    return ranked[0].method, [s.method for s in ranked]


def scenario_table(summaries: list[DetectorSummary]) -> list[str]:
    lines = ["| scenario | detector | runs | detected | median delay (events) | false alarms before change "
             "| requests per incident | promoted | accuracy before / right after / after retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for scenario in SCENARIOS:
        for s in summaries:
            runs = [r for r in s.runs if r.stream == scenario.name]
            if not runs:
                continue
            delays = [r.delay for r in runs if r.delay is not None]
            accs = [accuracies(r) for r in runs]
            parts = []
            for k in range(3):
                values = [a[k] for a in accs if a[k] is not None]
                parts.append(_fmt(np.mean(values), 3) if values else "–")
            after = [r.requests_after_change for r in runs if not r.missed]
            lines.append(
                f"| {scenario.name} | {s.method} | {len(runs)} | {sum(not r.missed for r in runs)} "
                f"| {_fmt(statistics.median(delays) if delays else None)} | {sum(r.false_alarms for r in runs)} "
                f"| {_fmt(np.mean(after) if after else None, 1)} | {sum(r.promotion is not None for r in runs)} "
                f"| {' / '.join(parts)} |")
    return lines


def summary_table(summaries: list[DetectorSummary]) -> list[str]:
    lines = ["| detector | false alarms per 1e6 stationary events | median delay, concept changes (events) "
             "| missed concept changes | median delay, all changes | missed, all changes "
             "| false alarms before change (runs) | requests per incident | promoted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        st = s.stationary
        rate = _fmt(st.per_1e6, 1) + (f" (on {st.measured:,} events, scaled)" if st.scaled else "")
        concept = len(s.concept_runs())
        lines.append(
            f"| {s.method}{' (default)' if s.method == DEFAULT else ''} | {rate} | {_fmt(s.median_delay_concept)} "
            f"| {s.missed_concept} of {concept} | {_fmt(s.median_delay_all)} | {s.missed_all} of {len(s.runs)} "
            f"| {s.false_alarms_before_change} | {_fmt(s.requests_per_incident, 2)} | {s.promoted} of {len(s.runs)} |")
    return lines


def run() -> dict:
    started = time.perf_counter()
    config = LoopConfig()
    methods = list(METHODS)
    slow = [m for m in methods if is_slow(m)]
    runs: dict[str, list[LoopResult]] = {m: [] for m in methods}
    for seed in range(1, SEEDS + 1):
        for scenario in SCENARIOS:
            chosen = [m for m in methods if m not in slow or seed <= SLOW_SEEDS]
            for result in run_scenario(scenario, seed, chosen, config):
                runs[result.method].append(result)
    stationary_stream = STATIONARY.make(SEEDS + 100, TRAIN_ROWS, STATIONARY_EVENTS, 0)
    stationary_champion = first_model(stationary_stream)
    counts = stationary_detections(stationary_errors(stationary_stream, stationary_champion), methods, config,
                                   budget_s=BUDGET_S)
    summaries = [DetectorSummary(c.method, c, runs[c.method]) for c in counts]
    winner, ranked = best(summaries)
    default = next(s for s in summaries if s.method == DEFAULT)
    elapsed = time.perf_counter() - started

    print(f"detection: {len(SCENARIOS)} scenarios x {SEEDS} seeds ({', '.join(slow) or 'none'}: {SLOW_SEEDS} seed, "
          f"too slow in river), {TRAIN_ROWS:,} training rows, {PRE:,} events before and {POST:,} after each change, "
          f"{config.events_per_s:g} events/s, labels {config.label_delay} events late, batches of {config.batch}; "
          f"stationary: {STATIONARY_EVENTS:,} labelled events, error rate {default.stationary.error_rate:.3f}; "
          f"{elapsed:.0f} s", flush=True)
    for line in summary_table(summaries) + [""] + scenario_table(summaries):
        print(line, flush=True)
    verdict = (f"best by the rule (<= {FALSE_ALARM_CAP:g} false alarms per 1e6, then fewest missed concept changes, "
               f"then smallest median delay): {winner}; ranking {ranked}; default {DEFAULT}: median delay "
               f"{_fmt(default.median_delay_concept)} events on concept changes, "
               f"{_fmt(default.stationary.per_1e6, 1)} false alarms per 1e6; "
               + ("keep the default" if winner == DEFAULT else f"the measurement favours {winner}"))
    print(verdict, flush=True)
    return {
        "bench": "detection", "seconds": round(elapsed, 1), "seeds": SEEDS, "slow_detectors": slow,
        "slow_seeds": SLOW_SEEDS, "label_delay_events": config.label_delay, "events_per_s": config.events_per_s,
        "stationary_events": STATIONARY_EVENTS, "best": winner, "ranking": ranked, "default": DEFAULT,
        "detectors": {s.method: {
            "false_alarms_per_1e6": round(s.stationary.per_1e6, 2), "stationary_measured": s.stationary.measured,
            "median_delay_concept": s.median_delay_concept, "missed_concept": s.missed_concept,
            "median_delay_all": s.median_delay_all, "missed_all": s.missed_all, "runs": len(s.runs),
            "false_alarms_before_change": s.false_alarms_before_change,
            "requests_per_incident": s.requests_per_incident, "promoted": s.promoted,
        } for s in summaries},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
