"""Bus: produce, consume in batches, commit. In-process or Kafka."""

from driftline.bus.base import Bus, BusFull, Consumer, Message, Offsets, Producer, next_offsets, partition_for

__all__ = ["Bus", "BusFull", "Consumer", "Message", "Offsets", "Producer", "next_offsets", "partition_for"]
