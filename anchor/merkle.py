"""Re-export: the RFC 9162 Merkle tree lives in :mod:`fieldproof.formats.merkle` (a pure format
every room reads). Kept because other code verifies proofs through ``anchor.merkle``."""

from fieldproof.formats.merkle import ProofError, verify_consistency, verify_inclusion

__all__ = ["ProofError", "verify_consistency", "verify_inclusion"]
