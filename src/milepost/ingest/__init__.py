"""Events API ingestion: validate, authenticate, resolve identities, append durably."""
