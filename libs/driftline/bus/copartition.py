"""Topics a group reads together and joins by key must have the same number of partitions.

The label-joiner reads ``predictions`` and ``labels``, both keyed by event id. With the
same partition count on both, an event's prediction and its label land on the same
partition number, and a range assignment gives partition *i* of both topics to the
same instance, so the join never has to look across instances. With different counts
they land on different partition numbers and two instances would each hold half of a
join: the bus refuses to start such a group instead.
"""

from __future__ import annotations


class TopicsNotCoPartitioned(ValueError):
    """Topics read together by one group have different partition counts."""


def check_co_partitioned(group: str, counts: dict[str, int]) -> None:
    """Raise :class:`TopicsNotCoPartitioned` naming the topics unless every count in ``counts`` is equal.

    Parameters
    ----------
    group
        The consumer group that reads the topics together (named in the message).
    counts
        topic -> its partition count on the bus.
    """
    if len(set(counts.values())) <= 1:
        return
    listed = ", ".join(f"{topic} has {n}" for topic, n in sorted(counts.items()))
    most = max(counts.values())
    fewer = sorted(t for t, n in counts.items() if n < most)
    raise TopicsNotCoPartitioned(
        f"group {group} reads {', '.join(sorted(counts))} together and joins them by key, so they need "
        f"the same number of partitions, but {listed}. Give them the same count, e.g. "
        + "; ".join(f"kafka-topics.sh --alter --topic {t} --partitions {most}" for t in fewer)
        + " (records already written keep their partition: drain the group first), "
          "or recreate the topics with DRIFTLINE_PARTITIONS set. See README, 'Scaling out'.")
