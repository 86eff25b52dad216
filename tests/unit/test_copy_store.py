"""blobs.copy_store, the library side of keyblob store copy: what is copied, skipped,
refused and kept, and what it reports as it goes."""

from __future__ import annotations

from keyblob import blobs
from keyblob.storage.directory import DirectoryStore


def test_copy_reports_progress_and_leaves_set_aside_entries(make_container, tmp_path) -> None:
    container = make_container()
    source = DirectoryStore(tmp_path / "source")
    destination = DirectoryStore(tmp_path / "destination")
    blobs.generate(container, source, "alpha")
    blobs.rotate(container, source, "alpha")
    blobs.generate(container, source, "beta")
    source.put("beta", 2, b"damaged")
    source.put("beta", 3, b"set aside")
    source.set_aside("beta", 3)  # no lookup sees it: not copied, not counted
    destination.put("alpha", 1, source.get("alpha", 1))  # a copy that was stopped
    calls: list[tuple[int, int]] = []

    report = blobs.copy_store(
        container, source, destination, jobs=1, progress=lambda *a: calls.append(a)
    )

    assert (report.copied, report.skipped, report.total) == (2, 1, 4)
    assert [(r.name, r.generation) for r in report.refused] == [("beta", 2)]
    assert "key blob" in report.refused[0].reason
    assert report.conflicts == []
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert destination.names() == ["alpha", "beta"]
    assert destination.generations("beta") == [1]
    assert container.state().generation_floor("beta") == 1  # the home is not changed


def test_copy_never_raises_a_mark_nor_applies_one(make_container, tmp_path) -> None:
    container = make_container()
    source = DirectoryStore(tmp_path / "source")
    blobs.generate(container, source, "alpha")
    for _ in range(3):
        blobs.rotate(container, source, "alpha")
    before = container.state()

    report = blobs.copy_store(container, source, DirectoryStore(tmp_path / "d"), jobs=2)

    assert (report.copied, report.refused) == (4, [])  # old generations too, below the mark
    assert container.state() == before
