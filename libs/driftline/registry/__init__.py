"""Model registry: versions, aliases, lineage, audit; artifacts checked by sha256 and by exact type names."""

from driftline.registry.artifacts import TamperedArtifact, UnloadableArtifact, UntrustedArtifact
from driftline.registry.core import (ALIASES, InvalidModelName, LoadedModel, ModelVersion, MonitoringRequired, Registry,
                                     RegistryError)
from driftline.registry.sandbox import LoadProbe, ProbeUnavailable

__all__ = ["ALIASES", "InvalidModelName", "LoadProbe", "LoadedModel", "ModelVersion", "MonitoringRequired",
           "ProbeUnavailable", "Registry", "RegistryError", "TamperedArtifact", "UnloadableArtifact", "UntrustedArtifact"]
