"""Operator endpoints under /admin (admin scope): adapters."""
