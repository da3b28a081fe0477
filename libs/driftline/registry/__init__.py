"""Model registry: versions, aliases, lineage, audit; artifacts checked by sha256."""

from driftline.registry.artifacts import TamperedArtifact, UntrustedArtifact
from driftline.registry.core import ALIASES, LoadedModel, ModelVersion, Registry, RegistryError

__all__ = ["ALIASES", "LoadedModel", "ModelVersion", "Registry", "RegistryError", "TamperedArtifact", "UntrustedArtifact"]
