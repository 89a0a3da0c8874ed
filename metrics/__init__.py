"""Every Prometheus metric Meridian exports, defined in one place."""
