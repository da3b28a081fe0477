"""Ask a Kafka cluster which members a consumer group has, from a child process.

librdkafka's admin client can abort the whole process (``rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed``, confluentinc/librdkafka#4605) when a
DescribeConsumerGroups request is outstanding while a broker disconnects. A
standby drift-detector asks every few seconds, so a broker restart would kill
it. Run in a child, the question can only fail, never take the service down:
the child's abort is an answer of "cannot tell now", and the standby asks again.

The client configuration (which may hold SASL credentials) travels on stdin,
never on the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys


def group_members(config: dict, group: str, timeout_s: float = 10.0) -> list[str]:
    """Sorted member ids of ``group`` (empty: nobody in it); raises RuntimeError when it cannot tell."""
    request = json.dumps({"config": config, "group": group, "timeout_s": timeout_s})
    try:
        done = subprocess.run([sys.executable, "-m", "driftline.bus.group_members"], input=request,
                              capture_output=True, text=True, timeout=timeout_s + 20)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"describing group {group} took over {timeout_s + 20:.0f}s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"describing group {group} failed: {last}")
    return json.loads(done.stdout)


def _describe() -> None:
    from confluent_kafka.admin import AdminClient

    request = json.loads(sys.stdin.read())
    timeout_s = request["timeout_s"]
    admin = AdminClient(request["config"])
    description = admin.describe_consumer_groups([request["group"]], request_timeout=timeout_s)[
        request["group"]].result(timeout=timeout_s)
    print(json.dumps(sorted(m.member_id for m in description.members)))


if __name__ == "__main__":
    _describe()
