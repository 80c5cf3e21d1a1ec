"""Tenants: who a request acts for (`principal`), and the API keys that say so, stored hashed
and managed over the admin API and `ragtune keys` (`service`)."""
