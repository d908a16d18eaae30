"""The approach catalogue on disk: every `services/<name>/` folder with its `service.toml`
manifest (what deployments need that Describe cannot say) and the per-service environments
the local runtime builds from each folder's own requirements."""

from fixbench.catalog.manifest import LAYERS, ManifestError, ServiceManifest, discover, load_manifest

__all__ = ["LAYERS", "ManifestError", "ServiceManifest", "discover", "load_manifest"]
