"""Deleting a task never removes audio another task still points to (issue 30).

Audio is stored per tenant, and a blob is retired (moved aside, references counted
again, brought back if one appeared) rather than deleted. The races are played in
each order by running the submitter's real steps inside the retirement's recount.
"""

from __future__ import annotations

import asyncio

from app.tasks import removal
from tests.conftest import DATA
from tests.test_task_door import make_door

AUDIO = (DATA / "jfk.flac").read_bytes()


def _task(door, tenant: str, uri: str, sha: str):
    return door.services.store.create(
        tenant_id=tenant, audio_uri=uri, audio_sha256=sha, audio_filename="jfk.flac"
    )


def test_tenants_never_share_a_blob(tmp_path):
    door = make_door(tmp_path)
    blobs = door.services.blobs
    a, b = door.tenants.ensure("a").id, door.tenants.ensure("b").id
    sha, uri_a = blobs.put(AUDIO, a)
    _, uri_b = blobs.put(AUDIO, b)
    assert uri_a != uri_b and blobs.namespace_of(uri_a) == a
    task_a, task_b = _task(door, a, uri_a, sha), _task(door, b, uri_b, sha)
    asyncio.run(door.delete(task_a))
    assert not blobs.exists(uri_a)
    assert blobs.get(uri_b) == AUDIO and door.services.store.get(task_b.id) is not None


def test_a_reference_committed_during_the_recount_keeps_the_blob(tmp_path):
    door = make_door(tmp_path)
    store, blobs = door.services.store, door.services.blobs
    tenant = door.tenants.ensure("t").id
    sha, uri = blobs.put(AUDIO, tenant)
    first = _task(door, tenant, uri, sha)
    store.delete(first.id, tenant)

    def submit_lands_now() -> bool:  # the other submission commits its row right here
        _task(door, tenant, uri, sha)
        return store.audio_in_use(sha, tenant)

    assert blobs.retire(uri, submit_lands_now) is False
    assert blobs.get(uri) == AUDIO


def test_a_submitter_restores_audio_retired_before_its_row(tmp_path):
    door = make_door(tmp_path)
    blobs = door.services.blobs
    tenant = door.tenants.ensure("t").id
    sha, uri = blobs.put(AUDIO, tenant)  # the submitter stored it (already there)
    first = _task(door, tenant, uri, sha)
    asyncio.run(door.delete(first))  # the DELETE saw no other reference: gone
    assert not blobs.exists(uri)
    _task(door, tenant, uri, sha)  # the submitter's row, then its ensure
    assert blobs.ensure(uri, AUDIO) is True
    assert blobs.get(uri) == AUDIO


def test_a_submitter_storing_again_while_the_blob_is_aside(tmp_path):
    door = make_door(tmp_path)
    store, blobs = door.services.store, door.services.blobs
    tenant = door.tenants.ensure("t").id
    sha, uri = blobs.put(AUDIO, tenant)

    def row_and_ensure_now() -> bool:
        _task(door, tenant, uri, sha)
        assert blobs.ensure(uri, AUDIO) is True  # it was aside: stored again
        return store.audio_in_use(sha, tenant)

    assert blobs.retire(uri, row_and_ensure_now) is False
    assert blobs.get(uri) == AUDIO
    leftovers = [p for p in blobs.fs.find(blobs.root) if ".retiring-" in p]
    assert leftovers == []


def test_a_blob_from_before_namespaces_is_counted_across_tenants(tmp_path):
    door = make_door(tmp_path)
    blobs = door.services.blobs
    a, b = door.tenants.ensure("a").id, door.tenants.ensure("b").id
    sha, legacy = blobs.put(AUDIO)  # no namespace: shared by both tenants' tasks
    assert blobs.namespace_of(legacy) is None
    task_a, _ = _task(door, a, legacy, sha), _task(door, b, legacy, sha)
    door.services.store.delete(task_a.id, a)
    removal.forget(door.services, task_a, None)
    assert blobs.get(legacy) == AUDIO
