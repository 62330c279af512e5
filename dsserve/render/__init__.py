"""Renderers: one deployment spec in, deployable artefacts out (Ray Serve YAML, ...)."""
