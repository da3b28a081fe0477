"""Alert policy and the outcomes of its requests: a rejected challenger re-arms the incident,
the cooldown follows a promotion only, outcomes apply once, state survives a restart."""

import json

import numpy as np
import pytest

from driftline.codec import Codec, registry_client
from driftline.drift.policy import REMEMBERED, AlertPolicy
from driftline.drift.psi import FeatureStats, psi_band
from driftline.drift import WindowStats
from driftline.topics import RETRAIN

MIN = 60_000
HOUR = 60 * MIN


def window(i, version=1, **psis):
    feats = {f: FeatureStats(f, "numeric", 1000, v, psi_band(v), 0.0) for f, v in psis.items()}
    return WindowStats("m", version, "time", i * MIN, (i + 1) * MIN, 1000, i * MIN, (i + 1) * MIN - 1, feats)


def feed(policy, series, start=0, version=1):
    """series: list of dicts feature -> psi, one window a minute; returns {window index: decision}."""
    out = {}
    for i, psis in enumerate(series, start):
        d = policy.observe_window("m", version, window(i, version, **psis))
        if d is not None:
            out[i] = d
    return out


def drifting(n):
    return [{"a": 0.5}] * n


def calm(n):
    return [{"a": 0.02}] * n


def test_a_rejected_challenger_rearms_its_incident_and_asks_again_with_the_next_attempt():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    (first,) = feed(policy, drifting(3)).values()  # window 0; 1 and 2 wait for its outcome
    assert (first.attempt, first.incident_id) == (1, first.request_id)
    assert policy.observe_outcome("m", first.request_id, "rejected", at_ms=3 * MIN)
    # re-armed at 3 + 5 = 8 min: window 7 ends there; the drift is still on, so it asks again
    out = feed(policy, drifting(10), start=3)
    assert list(out) == [7]
    second = out[7]
    assert (second.attempt, second.incident_id, second.reason) == (2, first.request_id, "data_drift")
    assert second.request_id != first.request_id
    assert second.to_dict()["incident_id"] == first.request_id and second.to_dict()["attempt"] == 2
    assert policy.status("m", 1)["suppressed"] == 4  # windows 3..6 in the back-off
    # rejected again: the back-off doubles (10 min from 13 min: window 22 ends at 23 min)
    assert policy.observe_outcome("m", second.request_id, "rejected", at_ms=13 * MIN)
    out = feed(policy, drifting(20), start=13)
    assert list(out) == [22] and out[22].attempt == 3 and out[22].incident_id == first.request_id


def test_without_an_outcome_the_cooldown_holds_as_before():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    out = feed(policy, drifting(3) + calm(1) + drifting(70))
    assert list(out) == [0, 60]  # the incident ended at window 3; nothing until an hour after window 0's decision
    assert out[60].attempt == 1 and out[60].incident_id == out[60].request_id  # a new incident


def test_the_cooldown_follows_a_promotion_for_every_version_of_the_model():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    (d,) = feed(policy, drifting(2)).values()
    assert policy.observe_outcome("m", d.request_id, "promoted", at_ms=2 * MIN)
    assert not policy.status("m", 1)["in_incident"]
    # v2, the promoted version, starts fresh but waits out the model's cooldown, as does v1
    assert feed(policy, drifting(59), start=2, version=2) == {}
    assert policy.observe_concept("m", 1, "ADWIN", 10, 30 * MIN) is None
    assert policy.status("m", 2)["cooldown_until_ms"] == 62 * MIN
    out = feed(policy, drifting(2), start=61, version=2)
    assert list(out) == [61] and out[61].attempt == 1 and out[61].model_version == 2


@pytest.mark.parametrize("outcome", ["rejected", "failed", "skipped"])
def test_a_false_alarm_rejected_does_not_blind_the_model_to_a_real_change(outcome):
    """The issue's story: a concept alarm early, its challenger rejected, a real shift later."""
    policy = AlertPolicy(consecutive_windows=2, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    false_alarm = policy.observe_concept("m", 1, "ADWIN", 1200, 5 * MIN)
    assert false_alarm is not None
    assert feed(policy, calm(10), start=5) == {}  # the data is calm: hysteresis ends the incident
    assert not policy.status("m", 1)["in_incident"]
    assert policy.observe_outcome("m", false_alarm.request_id, outcome, at_ms=15 * MIN)
    out = feed(policy, calm(10) + drifting(30), start=15)  # a real shift at 25 min
    assert list(out) == [26]  # its second window: 2 in a row
    real = out[26]
    assert real.attempt == 1 and real.incident_id == real.request_id  # a new incident: the old one had ended


def test_without_the_outcome_the_false_alarm_would_have_hidden_the_real_change():
    policy = AlertPolicy(consecutive_windows=2, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    assert policy.observe_concept("m", 1, "ADWIN", 1200, 5 * MIN) is not None
    assert feed(policy, calm(20) + drifting(30), start=5) == {}
    assert policy.status("m", 1)["suppressed"] == 29


def test_outcomes_apply_once():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    (first,) = feed(policy, drifting(1)).values()
    assert not policy.observe_outcome("m", "no-such-request", "rejected")  # unknown: nothing changes
    assert not policy.observe_outcome("other", first.request_id, "rejected")  # not that model's request
    assert policy.status("m", 1)["awaiting"] == first.request_id
    assert policy.observe_outcome("m", first.request_id, "rejected", at_ms=MIN)
    for outcome in ("rejected", "promoted", "failed"):  # a replayed topic; or a contradiction: the first stands
        assert not policy.observe_outcome("m", first.request_id, outcome, at_ms=2 * MIN)
    out = feed(policy, drifting(10), start=1)
    assert list(out) == [5]  # one re-arm, from the first answer: 1 + 5 min
    second = out[5]
    # The first request's answer again, while the second awaits its own: nothing fires
    assert not policy.observe_outcome("m", first.request_id, "rejected", at_ms=20 * MIN)
    assert feed(policy, drifting(30), start=20) == {}
    assert policy.status("m", 1)["awaiting"] == second.request_id


def test_an_older_requests_answer_counts_only_if_promoted():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=10 * MIN, rearm_after_ms=MIN)
    (old,) = feed(policy, drifting(1) + calm(1)).values()  # its incident ended, unanswered
    (new,) = feed(policy, drifting(10), start=10).values()  # after the cooldown: a new incident
    assert policy.observe_outcome("m", old.request_id, "rejected", at_ms=12 * MIN) is False
    assert policy.status("m", 1)["awaiting"] == new.request_id
    assert policy.observe_outcome("m", old.request_id, "promoted") is False  # answered already
    other = AlertPolicy(consecutive_windows=1, cooldown_ms=10 * MIN, rearm_after_ms=MIN)
    (old,) = feed(other, drifting(1) + calm(1)).values()
    feed(other, drifting(10), start=10)
    assert other.observe_outcome("m", old.request_id, "promoted", at_ms=20 * MIN)  # a new champion all the same
    assert other.status("m", 1)["cooldown_until_ms"] == 30 * MIN and not other.status("m", 1)["in_incident"]


def test_the_backoff_doubles_up_to_the_cooldown():
    policy = AlertPolicy(cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    assert [policy._backoff(a) for a in range(1, 7)] == [5 * MIN, 10 * MIN, 20 * MIN, 40 * MIN, HOUR, HOUR]
    assert AlertPolicy(cooldown_ms=0, rearm_after_ms=MIN)._backoff(1) == 0  # never longer than the cooldown
    assert AlertPolicy(cooldown_ms=HOUR, rearm_after_ms=MIN)._backoff(10_000) == HOUR
    with pytest.raises(ValueError):
        AlertPolicy(rearm_after_ms=-1)
    with pytest.raises(ValueError):
        AlertPolicy().observe_outcome("m", "r", "accepted")


def test_an_answer_seen_before_its_request_is_taken_when_the_request_is_decided_again():
    """A restart from a snapshot older than the request: the models topic is read again from the
    start, so the answer comes first; the replayed input decides the same request again."""
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    before = json.loads(json.dumps(policy.snapshot()))
    (first,) = feed(policy, drifting(1)).values()

    restarted = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=5 * MIN)
    restarted.restore(before)
    assert not restarted.observe_outcome("m", first.request_id, "rejected")  # not known yet
    (again,) = feed(restarted, drifting(1)).values()
    assert again.request_id == first.request_id
    assert restarted.status("m", 1)["awaiting"] is None  # answered at once, at the decision's time
    assert list(feed(restarted, drifting(10), start=1)) == [5]  # re-armed 5 min after window 0's end at 1 min


def test_snapshot_restore_with_outcomes_matches_an_uninterrupted_run():
    rng = np.random.default_rng(4)
    series = [{"a": float(v), "b": float(w)} for v, w in rng.choice([0.02, 0.15, 0.3, 0.6], (240, 2))]
    outcomes = ["rejected", "promoted", "failed", "skipped", "rejected"]
    kwargs = {"consecutive_windows": 2, "cooldown_ms": 30 * MIN, "rearm_after_ms": 3 * MIN}

    def run(policy, start, stop, answered):
        """Feed windows start..stop; answer every decision two windows later, cycling outcomes."""
        got, waiting = {}, []
        for i in range(start, stop):
            for due, rid in [w for w in waiting if w[0] == i]:
                policy.observe_outcome("m", rid, outcomes[len(answered) % len(outcomes)], at_ms=i * MIN)
                answered.append(rid)
                waiting.remove((due, rid))
            d = policy.observe_window("m", 1, window(i, **series[i]))
            if d is not None:
                got[i] = d
                if i + 2 < stop:
                    waiting.append((i + 2, d.request_id))
        return got

    whole = run(AlertPolicy(**kwargs), 0, len(series), [])
    assert len(whole) >= 5 and max(d.attempt for d in whole.values()) >= 2
    for cut in (37, 101, 170):
        answered = []
        first = AlertPolicy(**kwargs)
        got = run(first, 0, cut, answered)
        second = AlertPolicy(**kwargs)
        second.restore(json.loads(json.dumps(first.snapshot())))
        # requests cut off before their answer get it right after the restart, as the whole run did
        pending = [(i, d) for i, d in got.items() if cut - 2 <= i < cut]
        for i, d in pending:
            outcome = outcomes[len(answered) % len(outcomes)]
            assert second.observe_outcome("m", d.request_id, outcome, at_ms=(i + 2) * MIN)
            answered.append(d.request_id)
        got.update(run(second, cut, len(series), answered))
        assert {i: d.to_dict() for i, d in got.items()} == {i: d.to_dict() for i, d in whole.items()}


def test_a_snapshot_written_before_outcomes_existed_restores():
    """Format 1: no incident ids, no requests; its open incident ends by hysteresis, as it would have."""
    old = {"format": 1, "states": [
        {"model": "m", "version": 1, "in_incident": True, "cooldown_until": 61 * MIN, "last_end": MIN,
         "suppressed": 2, "streaks": {}},
        {"model": "m", "version": 2, "in_incident": False, "cooldown_until": None, "last_end": 3 * MIN,
         "suppressed": 0, "streaks": {"a": [[0.4, 2 * MIN, 3 * MIN, 2 * MIN, 3 * MIN]]}},
    ]}
    policy = AlertPolicy(consecutive_windows=2, cooldown_ms=HOUR)
    policy.restore(old)
    assert policy.status("m", 1)["in_incident"] and policy.status("m", 1)["suppressed"] == 2
    assert feed(policy, drifting(5), start=1) == {}  # still in its incident, awaiting a request no one can name
    assert list(feed(policy, drifting(1), start=3, version=2)) == [3]  # v2's run went on: 2 in a row
    feed(policy, calm(1), start=6)
    assert not policy.status("m", 1)["in_incident"]
    assert list(feed(policy, drifting(60), start=7)) == [60]  # the old cooldown (61 min) still counts
    with pytest.raises(ValueError):
        policy.restore({"format": 99, "states": []})


def test_memory_of_requests_and_answers_is_bounded():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=0, rearm_after_ms=0)
    for i in range(REMEMBERED + 5):
        policy.observe_outcome("m", f"unknown-{i}", "rejected")
    snapshot = policy.snapshot()
    assert len(snapshot["answered"]) == REMEMBERED and snapshot["answered"][0][0] == "unknown-5"


def test_a_request_encodes_as_a_retrain_request_record():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=HOUR, rearm_after_ms=MIN)
    (first,) = feed(policy, drifting(1)).values()
    policy.observe_outcome("m", first.request_id, "failed", at_ms=MIN)
    (second,) = feed(policy, drifting(5), start=1).values()
    codec = Codec(registry_client(None))
    decoded = codec.decode(RETRAIN, codec.encode(RETRAIN, second.to_dict()))
    assert (decoded["incident_id"], decoded["attempt"], decoded["min_rows"]) == (first.request_id, 2, 0)
