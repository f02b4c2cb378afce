"""Storage layer: SQL task store (sqlmodel), Redis state, audio blobs."""
