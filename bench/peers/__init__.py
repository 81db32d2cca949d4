"""Peer round-trip scripts. They run under .venv-bench-peers, never in the project venv."""
