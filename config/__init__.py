"""Meridian's settings: frozen dataclasses loaded from TOML with environment overrides."""
