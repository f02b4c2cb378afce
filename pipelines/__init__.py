"""Ray Data batch jobs."""
