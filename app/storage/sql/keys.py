"""Tenants and API keys.

A key looks like ``aipp_<43 url-safe base64 chars>`` (256 random bits). It is
shown once, at creation; the database keeps only its SHA-256 (a fast hash is
right here: the key is random, not a password, so brute force is hopeless)
and a short ``prefix`` so people can tell keys apart in ``aipp keys list``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.storage.sql.engine import writer
from app.storage.sql.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "aipp_"
#: Webhook signing secrets look like Standard Webhooks' ``whsec_`` + base64 of 24 bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"
#: Characters of the key kept in clear to identify it (``aipp_`` + 7).
DISPLAY_PREFIX_LEN = 12


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_webhook_secret(nbytes: int = 24) -> str:
    """A new signing secret; stored here, so storage makes it (app.tasks.webhooks signs)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def ensure_tenant(engine: Engine, name: str) -> Tenant:
    """The tenant called ``name``, created (with a webhook secret) if needed; race-safe."""
    name = name.strip()
    if not name:
        raise ValueError("tenant name must not be empty")
    with Session(engine, expire_on_commit=False) as session:
        tenant = session.exec(select(Tenant).where(Tenant.name == name)).first()
        if tenant is not None:
            return tenant
    try:
        with Session(writer(engine), expire_on_commit=False) as session:
            tenant = Tenant(name=name, webhook_secret=new_webhook_secret())
            session.add(tenant)
            session.commit()
            return tenant
    except IntegrityError:
        # Another process created it between our read and insert.
        with Session(engine, expire_on_commit=False) as session:
            return session.exec(select(Tenant).where(Tenant.name == name)).one()


def get_tenant(engine: Engine, tenant_id: str) -> Tenant | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Tenant, tenant_id)


def find_tenant(engine: Engine, name: str) -> Tenant | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(select(Tenant).where(Tenant.name == name.strip())).first()


def rotate_webhook_secret(engine: Engine, tenant_id: str) -> Tenant | None:
    """Give the tenant a new signing secret (the old one stops verifying at once)."""
    with Session(writer(engine), expire_on_commit=False) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            return None
        tenant.webhook_secret = new_webhook_secret()
        session.add(tenant)
        session.commit()
        return tenant


def create_key(engine: Engine, tenant_name: str) -> tuple[str, ApiKey]:
    """Create a key for ``tenant_name`` (creating the tenant if needed).

    Returns ``(plaintext, row)``; the plaintext cannot be recovered later.
    """
    tenant = ensure_tenant(engine, tenant_name)
    plaintext = generate_key()
    row = ApiKey(
        tenant_id=tenant.id,
        prefix=plaintext[:DISPLAY_PREFIX_LEN],
        key_hash=hash_key(plaintext),
    )
    with Session(writer(engine), expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return plaintext, row


def list_keys(
    engine: Engine, tenant_name: str | None = None, *, include_revoked: bool = True
) -> list[tuple[ApiKey, Tenant]]:
    """Keys (oldest first) with their tenants, optionally for one tenant."""
    query = select(ApiKey, Tenant).join(Tenant, col(ApiKey.tenant_id) == col(Tenant.id))
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    query = query.order_by(col(ApiKey.created_at), col(ApiKey.id))
    with Session(engine, expire_on_commit=False) as session:
        return [(key, tenant) for key, tenant in session.exec(query).all()]


def revoke_key(engine: Engine, key_id: str) -> ApiKey | None:
    """Revoke the key (idempotent: the first revocation time is kept); ``None`` if unknown."""
    with Session(writer(engine), expire_on_commit=False) as session:
        session.execute(
            sa.update(ApiKey)
            .execution_options(synchronize_session=False)
            .where(col(ApiKey.id) == key_id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=utcnow())
        )
        session.commit()
        return session.get(ApiKey, key_id)


def authenticate_key(engine: Engine, plaintext: str | None) -> tuple[Tenant, ApiKey] | None:
    """The tenant and key for a presented key; ``None`` if unknown, malformed or revoked."""
    if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    digest = hash_key(plaintext)
    query = (
        select(ApiKey, Tenant)
        .join(Tenant, col(ApiKey.tenant_id) == col(Tenant.id))
        .where(ApiKey.key_hash == digest)
    )
    with Session(engine, expire_on_commit=False) as session:
        row = session.exec(query).first()
    if row is None:
        return None
    key, tenant = row
    if key.revoked_at is not None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return tenant, key


def authenticate(engine: Engine, plaintext: str | None) -> Tenant | None:
    """The tenant owning a presented key; ``None`` if unknown, malformed or revoked."""
    found = authenticate_key(engine, plaintext)
    return found[0] if found else None


__all__ = [
    "KEY_PREFIX",
    "authenticate",
    "authenticate_key",
    "create_key",
    "ensure_tenant",
    "find_tenant",
    "generate_key",
    "get_tenant",
    "hash_key",
    "list_keys",
    "new_webhook_secret",
    "revoke_key",
    "rotate_webhook_secret",
]
