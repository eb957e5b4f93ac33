"""Archives and downloads are untrusted: no member is written outside the data folder (for every task's archive),
pinned checksums are enforced and a mismatching download is moved aside, pickled CIFAR batches run no code."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from experiments.corpora import ding as ding_corpus
from experiments.corpora import files
from experiments.lm import data as lm_data
from experiments.nmt import iwslt
from experiments.nmt.ding import DingCorpus
from experiments.task import DataError
from experiments.vision import cifar
from tests.conftest import RunsCode
from tests.nmt_fixtures import write_ding_file
from tests.vision_fixtures import write_cifar10


def add_member(tar: tarfile.TarFile, kind: str, name: str, target: str = "") -> None:
    """A member of ``kind``: file, symlink (to target), hardlink (to target) or device."""
    info = tarfile.TarInfo(name)
    payload = b"escaped\n"
    if kind == "file":
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        return
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}[kind]
    info.linkname = target
    tar.addfile(info)


def malicious_variants(outside: Path, inside: str) -> dict[str, tuple[str, str, str]]:
    """(kind, member name, link target) of each escape, aimed at ``outside``; ``inside`` is a genuine member name."""
    return {
        "dotdot": ("file", f"{inside.split('/')[0]}/../../{outside.name}", ""),
        "absolute": ("file", str(outside), ""),
        "symlink": ("symlink", inside, str(outside)),
        "hardlink": ("hardlink", inside, str(outside)),
        "device": ("device", inside, ""),
    }


def rebuild_with(original: Path, dest: Path, kind: str, name: str, target: str) -> Path:
    """``original``'s members (minus ``name``) plus one malicious member, as a new .tar.gz at ``dest``."""
    with tarfile.open(original, "r:*") as src, tarfile.open(dest, "w:gz") as out:
        for member in src.getmembers():
            if member.name != name:
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
        add_member(out, kind, name, target)
    return dest


VARIANTS = ["dotdot", "absolute", "symlink", "hardlink", "device"]


# -------------------------------------------------------------------------------------------------- CIFAR-10

def cifar_archive(tmp_path: Path) -> Path:
    folder = write_cifar10(tmp_path / "src") / cifar.FOLDER
    archive = tmp_path / cifar.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=cifar.FOLDER)
    return archive


@pytest.mark.parametrize("variant", VARIANTS)
def test_cifar_archive_members_cannot_escape_even_unverified(tmp_path, variant):
    outside = tmp_path / "outside.txt"
    genuine = cifar_archive(tmp_path)
    kind, name, target = malicious_variants(outside, f"{cifar.FOLDER}/data_batch_1")[variant]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rebuild_with(genuine, data_dir / cifar.ARCHIVE, kind, name, target)
    with pytest.raises(DataError, match=r"has a member .* with (an absolute path|a '\.\.' path|a link to|a device)"):
        cifar.locate(data_dir, download=False, verify=False)
    assert not outside.exists() and not (data_dir / cifar.FOLDER).exists()  # nothing at all was extracted


def test_the_genuine_cifar_layout_extracts_and_reads(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cifar_archive(tmp_path).rename(data_dir / cifar.ARCHIVE)
    folder = cifar.locate(data_dir, download=False, verify=False)
    images, labels = cifar.read_split(folder, "test")
    assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)


def test_a_pickled_batch_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1],
                                    "evil": RunsCode(marker)}, protocol=2))
    with pytest.raises(DataError, match="is not a readable CIFAR-10 batch"):
        cifar.read_batch(batch)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- IWSLT'14

@pytest.mark.parametrize("variant", VARIANTS)
def test_iwslt_reads_named_regular_files_only_and_writes_nothing(tmp_path, variant):
    from tests.nmt_fixtures import write_iwslt_archive
    genuine = write_iwslt_archive(tmp_path / "src")
    needed = "de-en/train.tags.de-en.de"
    outside = tmp_path / "outside.txt"
    kind, name, target = malicious_variants(outside, needed)[variant]
    archive = rebuild_with(genuine, tmp_path / "de-en.tgz", kind, name, target)
    before = sorted(tmp_path.rglob("*"))
    if variant in ("dotdot", "absolute"):  # extra members: never extracted, the named files read as usual
        lines = iwslt.read_archive(archive, [needed])
        assert lines[needed]
    else:
        with pytest.raises(DataError, match="not a regular file|has no file"):
            iwslt.read_archive(archive, [needed])
    assert sorted(tmp_path.rglob("*")) == before and not outside.exists()


# ----------------------------------------------------------------------------------------- One Billion Word

@pytest.mark.parametrize("variant", VARIANTS)
def test_1bw_extraction_writes_only_regular_files_inside_the_data_dir(tmp_path, variant):
    from tests.lm_fixtures import write_archive
    genuine = write_archive(tmp_path / "src" / lm_data.ARCHIVE_NAME)
    outside = tmp_path / "outside.txt"
    extra = f"{lm_data.ARCHIVE_TOP}/{lm_data.TRAIN_DIR}/news.en-00099-of-00100"
    kind, name, target = malicious_variants(outside, extra)[variant]
    if variant == "dotdot":
        name = f"{lm_data.ARCHIVE_TOP}/{lm_data.TRAIN_DIR}/../../../{outside.name}"
    archive = rebuild_with(genuine, tmp_path / lm_data.ARCHIVE_NAME, kind, name, target)
    root = lm_data.extract_layout(archive, tmp_path / "data")
    assert not outside.exists() and not (tmp_path / "data" / outside.name).exists()
    written = [p for p in (tmp_path / "data").rglob("*") if not p.is_dir()]
    assert written and all(p.is_file() and not p.is_symlink() and root in p.parents for p in written)


# ------------------------------------------------------------------------------------- pinned downloads

def test_a_download_failing_its_pin_is_moved_aside_and_never_used(tmp_path):
    (tmp_path / "mirror").mkdir()
    mirror = write_ding_file(tmp_path / "mirror" / "de-en")
    gz = tmp_path / "mirror" / "de-en.txt.gz"
    gz.write_bytes(gzip.compress(mirror.read_bytes()))
    corpus = DingCorpus(tmp_path / "data", ding_file=None, urls=[gz.as_uri()])  # the pinned 2023-01-30 hash
    actual = ding_corpus.text_sha256(gz)
    with pytest.raises(DataError) as e:
        corpus.fingerprint()
    message = str(e.value)
    assert f"has sha256 {actual} but task.sha256={ding_corpus.DEFAULT_SHA256}" in message and "\n" not in message
    assert not corpus.download_to.exists()
    assert corpus.download_to.with_name(f"de-en.txt.gz.rejected-{actual[:12]}").exists()
    accepting = DingCorpus(tmp_path / "data", ding_file=None, urls=[gz.as_uri()], sha256=actual)
    assert accepting.fingerprint()["sha256"] == actual  # downloaded again, and this time it matches


def test_the_debian_dictionary_matches_the_pin_when_installed():
    path = Path(ding_corpus.DEFAULT_FILE)
    if not path.exists():
        pytest.skip(f"{path} is missing (Debian package trans-de-en)")
    first = path.read_text(encoding="utf-8").splitlines()[0]
    if "2023-01-30" not in first:
        pytest.skip(f"{path} is another version ({first}); the pin is of the 2023-01-30 file")
    assert ding_corpus.text_sha256(path) == ding_corpus.DEFAULT_SHA256


def test_every_default_download_is_https_and_pinned_where_a_checksum_exists():
    from tests.conftest import compose_cfg
    lm1b = compose_cfg("task=lm1b", "model=lstm_lm").task
    assert lm1b.url.startswith("https://") and lm1b.sha256 == "01ba60381110baf7f189dfd2b8374de371e8c9a340835793f190bdae9e90a34e"
    iw = compose_cfg("task=iwslt").task
    assert all(u.startswith("https://") for u in iw.urls)  # no checksum is published for de-en.tgz
    ding = compose_cfg("task=ding").task
    assert ding.sha256 == ding_corpus.DEFAULT_SHA256 and ding_corpus.DEFAULT_URLS[0].startswith("https://")
    assert cifar.CIFAR10.url.startswith("https://") and cifar.MD5[cifar.ARCHIVE] == "c58f30108f718f92721af3b95e74349a"


def test_safe_extract_refuses_before_writing_anything(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        add_member(tar, "file", "ok.txt")
        add_member(tar, "file", "../evil.txt")
    with pytest.raises(DataError, match=r"member '\.\./evil\.txt' with a '\.\.' path"):
        files.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists() and not (tmp_path / "evil.txt").exists()
