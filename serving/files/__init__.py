"""`/v1/files`: documents uploaded over HTTP, owned by the caller's tenant."""
