"""Many processes and machines: origins, edges, the Redis directory (docs/scaling.md)."""
