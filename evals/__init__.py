"""Offline evaluation above the packages: retrieval over a corpus, route replay, the comparison
of prompting, retrieval and an adapter on a task."""
