"""Plain domain objects: policy, query plan, privacy accounting. No I/O, no frameworks."""
