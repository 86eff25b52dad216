"""keyblob.pool and the whole-store checks on it: the same results on worker processes as
in this process, in order; and nothing secret reaches a worker (no fork, only public data
pickled, no passphrase in its environment)."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.reduction
import os
import pickle
import secrets

import pytest

from keyblob import Algorithm, blobs, pool
from keyblob.keys import KeyId, Suite
from keyblob.trust import TrustedSigner
from support import PASSPHRASE, worker_environment


def _bad_entries(container, store) -> None:
    """Three names of three generations; a bit flipped in one, an entry under the wrong
    name in another."""
    for name in ("alpha", "beta", "gamma"):
        blobs.generate(container, store, name)
        blobs.rotate(container, store, name)
        blobs.rotate(container, store, name)
    path = store.root / "beta" / "2.kb"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    store.put("gamma", 4, store.get("alpha", 3))


def test_a_pool_gives_what_this_process_gives_in_order(make_container, store, monkeypatch) -> None:
    container = make_container()
    _bad_entries(container, store)
    monkeypatch.setattr(blobs, "CHUNK_ENTRIES", 2)  # many chunks: order and read-ahead

    alone = blobs.check_store(container, store, jobs=1)
    pooled = blobs.check_store(container, store, jobs=2)

    assert pooled == alone
    assert [(e.name, e.generation) for e in pooled] == [
        (n, g)
        for n in ("alpha", "beta", "gamma")
        for g in range(1, 5)
        if (n, g) != ("alpha", 4) and (n, g) != ("beta", 4)
    ]
    failing = {(e.name, e.generation): e.reason for e in pooled if not e.ok}
    assert set(failing) == {("beta", 2), ("gamma", 4)}
    assert "signature" in failing["beta", 2]
    assert "'alpha', not 'gamma'" in failing["gamma", 4]


def test_small_inputs_stay_in_this_process(monkeypatch) -> None:
    monkeypatch.setattr(pool, "available_workers", lambda: 2)
    assert pool.workers_for(pool.MIN_POOL_ITEMS - 1) == 1
    assert pool.workers_for(pool.MIN_POOL_ITEMS) == 2
    assert pool.workers_for(3, requested=2) == 2  # --jobs is taken as given
    assert pool.workers_for(10**6, requested=1) == 1


def test_a_small_store_is_checked_without_a_pool(make_container, store, monkeypatch) -> None:
    container = make_container()
    _bad_entries(container, store)

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for 10 entries")

    monkeypatch.setattr(pool, "ProcessPoolExecutor", no_pool)
    assert len(blobs.check_store(container, store)) == 10  # jobs not given: the threshold
    with pytest.raises(AssertionError, match="a pool was started"):
        blobs.check_store(container, store, jobs=2)  # --jobs is taken as given


def test_workers_are_never_forked() -> None:
    method = pool._context().get_start_method()
    assert method in ("forkserver", "spawn")


def _fresh_forkserver() -> None:
    """The next pool starts a new forkserver (and so a new environment), as a new
    keyblob command does; under spawn every pool starts afresh anyway."""
    if pool._context().get_start_method() == "forkserver":
        multiprocessing.forkserver._forkserver._stop()


def test_workers_do_not_inherit_the_passphrase(monkeypatch) -> None:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "in the parent only")
    monkeypatch.setenv("PGPASSWORD", "in the parent only")
    monkeypatch.setenv("KEYBLOB_CHECK_PROBE", "inherited")
    names = ["KEYBLOB_PASSPHRASE", "PGPASSWORD", "KEYBLOB_CHECK_PROBE"]
    _fresh_forkserver()

    seen = list(pool.ordered_map(worker_environment, names, [[1], [2]], workers=2))

    assert seen == [None, None, "inherited"] * 2
    assert os.environ["KEYBLOB_PASSPHRASE"] == "in the parent only"  # put back
    assert os.environ["PGPASSWORD"] == "in the parent only"


def _secrets_of(container) -> list[bytes]:
    """The container's private keys, raw, the key that seals them, the passphrase."""
    out = [container._keys.seal, PASSPHRASE]
    for key in (container._signature, container._exchange):
        out.append(key.private_bytes_raw())
    return out


def test_nothing_secret_is_pickled_for_the_workers(make_container, store, monkeypatch) -> None:
    container = make_container()
    _bad_entries(container, store)
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASSPHRASE.decode())
    _fresh_forkserver()
    # Everything a worker is given is pickled by one of these two (the process object with
    # its start-up arguments; each task on the call queue): record what they are given.
    sent: list[object] = []
    pickled: list[bytes] = []
    dumps = multiprocessing.reduction.ForkingPickler.dumps
    dump = multiprocessing.reduction.dump

    def recording_dumps(obj, protocol=None):
        data = dumps(obj, protocol)
        sent.append(obj)
        pickled.append(bytes(data))
        return data

    def recording_dump(obj, file, protocol=None):
        # A process object's arguments are deleted once it has started: keep them.
        sent.append(getattr(obj, "_args", obj))
        pickled.append(bytes(dumps(obj, protocol)))
        return dump(obj, file, protocol)

    monkeypatch.setattr(multiprocessing.reduction.ForkingPickler, "dumps", recording_dumps)
    monkeypatch.setattr(multiprocessing.reduction, "dump", recording_dump)

    entries = blobs.check_store(container, store, jobs=2)

    assert len(entries) == 10
    everything = b"".join(pickled)
    assert store.get("alpha", 1) in everything  # the recording saw the blobs go
    for secret in _secrets_of(container):
        assert secret not in everything
    # The workers were started with the public policy as their one argument...
    started = [args for args in sent if isinstance(args, tuple) and pool._start_worker in args]
    assert len(started) == 2
    policy = blobs.CheckPolicy.of(container, container.state())
    for args in started:
        position = args.index(pool._start_worker)
        initializer, (given, _barrier) = args[position : position + 2]
        assert initializer is pool._start_worker
        assert given == policy
    # ...and then given, per task, the check function and (name, generation, bytes) items.
    tasks = [obj for obj in sent if type(obj).__name__ == "_CallItem"]
    assert [t.fn for t in tasks[:2]] == [pool._ready, pool._ready]
    items = []
    for task in tasks[2:]:
        assert task.fn is pool._run_chunk and task.kwargs == {}
        function, chunk = task.args
        assert function is blobs._check_items
        items.extend(chunk)
    assert all(type(n) is str and type(g) is int and type(d) is bytes for n, g, d in items)
    assert len(items) == 10


def test_the_policy_holds_public_keys_and_scopes_only(make_container) -> None:
    container = make_container()
    signer = TrustedSigner(
        KeyId(secrets.token_bytes(16)), Suite.X25519, b"p" * 32, b"x" * 32, "bob", 0, ("hr-*",)
    )
    container.update_state(lambda s: s.with_signer(signer).seen("payroll", 7))

    policy = blobs.CheckPolicy.of(container, container.state())

    assert policy.own_public == container.signature_public
    assert policy.trust.trusted == (signer,)
    assert policy.trust.marks == {} and policy.trust.recorded is None  # no mark: not applied
    assert pickle.loads(pickle.dumps(policy)) == policy
    with pytest.raises(TypeError):  # the container itself can never be sent
        pickle.dumps(container)


def test_check_entries_reports_an_unreadable_entry(make_container, store) -> None:
    container = make_container()
    blobs.generate(container, store, "alpha", algorithm=Algorithm.AES_256_GCM)
    listing = [("alpha", [1, 2])]  # generation 2 is listed but not stored

    checked = list(blobs.check_entries(container, store, listing, jobs=1))

    assert [c.ok for c in checked] == [True, False]
    assert checked[1].data is None and "alpha" in checked[1].reason
