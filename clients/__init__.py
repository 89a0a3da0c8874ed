"""WHIP and WHEP clients: the demo studio, tests and benchmarks use them."""
