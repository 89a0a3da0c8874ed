"""Fuzz harnesses (atheris) for what clients send Meridian; see fuzz/README.md."""
