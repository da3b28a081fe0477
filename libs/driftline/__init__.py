"""driftline: keep machine-learning models honest in production."""

import warnings

# authlib, which confluent-kafka's schema-registry client imports, forces its own
# deprecation warning about an httpx integration we do not use; keep it off users' screens.
with warnings.catch_warnings(record=True):
    import confluent_kafka.schema_registry  # noqa: F401

__version__ = "0.1.0"
