"""Network guard for user-supplied URLs (SSRF)."""
