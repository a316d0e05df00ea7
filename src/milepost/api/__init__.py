"""HTTP: the mParticle-compatible Events API under /v2 and the management API under /api/v1."""
