"""The operator console under /console: server-rendered pages (Jinja2 + htmx) over the same
services as the admin API, behind a login with the admin key."""
