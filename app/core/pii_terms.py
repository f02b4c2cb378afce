"""The words of PII redaction that options, the API and the redaction engine share.

They live in ``core`` because :class:`app.core.task_vocabulary.ProcessingOptions` names
them and every layer reads those options; the engine itself is ``app/privacy``.
"""

from __future__ import annotations

from enum import StrEnum


class PiiEntity(StrEnum):
    """The named policy set: what redaction can find and replace."""

    PERSON = "PERSON"
    PHONE_NUMBER = "PHONE_NUMBER"
    EMAIL_ADDRESS = "EMAIL_ADDRESS"
    CREDIT_CARD = "CREDIT_CARD"  # Luhn-checked
    US_SSN = "US_SSN"  # national ID number
    IBAN = "IBAN"  # ISO 13616 checksum
    ADDRESS = "ADDRESS"  # postal (street) address
    DATE_OF_BIRTH = "DATE_OF_BIRTH"


class RedactMode(StrEnum):
    """How a found entity is replaced."""

    LABEL = "label"  # [PHONE_NUMBER]
    MASK = "mask"  # a fixed mask, the same for every entity
    PSEUDONYM = "pseudonym"  # [PERSON_1]: stable within one task


#: The fixed mask of :attr:`RedactMode.MASK`.
MASK = "[REDACTED]"

ALL_ENTITIES: tuple[PiiEntity, ...] = tuple(PiiEntity)


def parse_policy(value: str | None) -> tuple[PiiEntity, ...]:
    """``"PERSON,EMAIL_ADDRESS"`` (any case, or ``all``/empty for every entity) -> entities
    in their canonical order; an unknown name raises ``ValueError`` naming it."""
    if value is None or not value.strip() or value.strip().lower() == "all":
        return ALL_ENTITIES
    wanted = {part.strip().upper() for part in value.split(",") if part.strip()}
    unknown = sorted(wanted - {e.value for e in PiiEntity})
    if unknown:
        names = ", ".join(e.value for e in PiiEntity)
        raise ValueError(f"unknown PII entity {unknown[0]!r}; use some of: {names} (or all)")
    return tuple(e for e in PiiEntity if e.value in wanted)


__all__ = ["ALL_ENTITIES", "MASK", "PiiEntity", "RedactMode", "parse_policy"]
