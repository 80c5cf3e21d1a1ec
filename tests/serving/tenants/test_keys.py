"""The tenants' key store: what reaches the disk (a digest, never the key), revocation,
changes made by another process (seen within RECHECK_S, with no file-system call per lookup in
between), and refusals that say what to do."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ragtune.serving.errors import InvalidRequestError, KeyNotFoundError, KeyStoreError
from ragtune.serving.tenants.principal import Principal
from ragtune.serving.tenants.service import RECHECK_S, KeyStore, keys_path


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(keys_path(tmp_path))


def test_a_created_key_is_stored_as_a_digest_only_and_readable_by_its_owner_only(
    store: KeyStore,
) -> None:
    created = store.create(["handbook", "faq"], ["titler"], name="team a")

    assert created.key.startswith(f"rt_{created.stored.id}_")
    on_disk = store.path.read_text()
    secret = created.key.removeprefix(f"rt_{created.stored.id}_")
    assert created.key not in on_disk
    assert secret not in on_disk
    (record,) = json.loads(on_disk)["keys"]
    assert set(record) == {"id", "name", "collections", "adapters", "created", "sha256"}
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not [p for p in store.path.parent.iterdir() if p.suffix == ".tmp"]


def test_a_key_finds_its_tenant_and_nothing_else_does(store: KeyStore) -> None:
    created = store.create(["handbook", "faq"], ["titler"])
    other = store.create(["beta"])

    found = store.find(created.key)
    assert found is not None
    assert found.principal() == Principal(
        tenant=created.stored.id,
        admin=False,
        collections=frozenset({"handbook", "faq"}),
        adapters=frozenset({"titler"}),
        default_collection="handbook",
    )
    assert store.find(other.key).principal().adapters == frozenset()  # type: ignore[union-attr]
    # The right id with another key's secret, a changed character, an env-style key: none.
    forged = f"rt_{created.stored.id}_{other.key.split('_', 2)[2]}"
    assert store.find(forged) is None
    assert store.find(created.key[:-1] + ("A" if created.key[-1] != "A" else "B")) is None
    assert store.find("chat-key") is None


def test_a_revoked_key_admits_nobody_and_others_stay(store: KeyStore) -> None:
    first, second = store.create(["a-docs"]), store.create(["b-docs"])

    revoked = store.revoke(first.stored.id)

    assert revoked.id == first.stored.id
    assert store.find(first.key) is None
    assert store.find(second.key) is not None
    assert [k.id for k in store.list()] == [second.stored.id]


def test_changes_made_by_another_process_are_seen_without_a_restart(tmp_path: Path) -> None:
    now = [0.0]
    server = KeyStore(keys_path(tmp_path), clock=lambda: now[0])
    cli = KeyStore(keys_path(tmp_path))
    assert server.list() == []

    created = cli.create(["handbook"])
    now[0] += RECHECK_S
    assert server.find(created.key) is not None

    cli.revoke(created.stored.id)
    now[0] += RECHECK_S / 2
    assert server.find(created.key) is not None  # the file is looked at once per RECHECK_S
    now[0] += RECHECK_S / 2
    assert server.find(created.key) is None


def test_lookups_between_two_looks_at_the_file_make_no_file_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests look keys up on the event loop: most lookups must not touch the disk."""
    now = [0.0]
    server = KeyStore(keys_path(tmp_path), clock=lambda: now[0])
    created = server.create(["handbook"])
    looks: list[Path] = []
    real_stat = Path.stat

    def counted(path: Path, **kwargs: bool) -> os.stat_result:
        looks.append(path)
        return real_stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", counted)
    for _ in range(50):
        assert server.find(created.key) is not None
    assert looks == [server.path]  # the first lookup after the change, then none
    now[0] += RECHECK_S
    assert server.find(created.key) is not None
    assert looks == [server.path] * 2


def test_an_unknown_id_is_a_clear_error(store: KeyStore) -> None:
    store.create(["handbook"])
    with pytest.raises(KeyNotFoundError, match=r"no API key has the id 'nope'.*keys list"):
        store.revoke("nope")


@pytest.mark.parametrize(
    "damage", ["{not json", '{"version": 1}', '{"version": 7, "keys": []}', "[]"]
)
def test_a_damaged_file_is_a_clear_error_and_is_never_overwritten(
    store: KeyStore, damage: str
) -> None:
    created = store.create(["handbook"])
    store.path.write_text(damage)

    for action in (store.list, lambda: store.create(["other"]), lambda: store.find(created.key)):
        with pytest.raises(KeyStoreError, match=r"damaged.*restore it from a backup"):
            action()
    with pytest.raises(KeyStoreError):
        store.revoke(created.stored.id)
    assert store.path.read_text() == damage


def test_environment_style_keys_are_not_looked_up_in_a_damaged_file(store: KeyStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    assert store.find("chat-key") is None


@pytest.mark.parametrize(
    ("collections", "adapters", "name", "param"),
    [
        ([], [], "", "collections"),
        ([" ", ""], [], "", "collections"),
        (["../etc"], [], "", "collections"),
        (["ok-docs"], ["Not An Adapter"], "", "adapters"),
        (["ok-docs"], [], "bell\x07", "name"),
        ([f"docs-{n}" for n in range(101)], [], "", "collections"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    store: KeyStore, collections: list[str], adapters: list[str], name: str, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        store.create(collections, adapters, name)
    assert refused.value.param == param
    assert not store.path.exists()


def test_names_are_stripped_and_repeats_dropped_in_order(store: KeyStore) -> None:
    stored = store.create([" faq", "handbook", "faq "], ["titler", "titler"]).stored
    assert stored.collections == ("faq", "handbook")
    assert stored.adapters == ("titler",)
    assert stored.principal().default_collection == "faq"
