"""Redis repositories. Every key this system writes is named in keyspace.py."""
