"""deploystream core: the pieces both the orchestrator and the executor use.

Redis connections, key material (sealing and signing), logging and the CLI shell
live here once; ``contracts`` holds the wire schemas.
"""
