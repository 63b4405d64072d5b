"""Integration tests: the HTTP API and the worker over real databases."""
