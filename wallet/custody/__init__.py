"""Key custody: generation, encryption at rest, (later) signing. Only the key-holding worker loads it."""
