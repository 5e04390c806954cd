"""data-extraction end to end: figshare on 127.0.0.1, local archives, Google Drive, synthetic, errors."""
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fake_figshare import closed_port, micro_files, serve, tar_bytes

from microplastics.core.cli import UserError
from microplastics.data import download, extraction, origin

ROOT = Path(__file__).resolve().parents[1]
DATA = tar_bytes(micro_files(3))
NAME = "MICRO.tar.gz"
FILES = {NAME: DATA, "MESO.tar.gz": b"meso", "README.txt": b"readme"}


def _args(tmp_path, *extra):
    return ["--out", str(tmp_path / "MICRO"), "--cache-dir", str(tmp_path / "cache"), *extra]


def _assert_micro(out, n=3):
    assert sorted(p.name for p in (out / "raw_img").iterdir()) == [f"photo_{i}.jpg" for i in range(n)]
    assert len(list((out / "annotation").glob("*.tsv"))) == n


def _assert_no_output(tmp_path):
    # No --out, and no half-filled staging folder beside it.
    assert not (tmp_path / "MICRO").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".MICRO")] == []


def test_figshare_download_unpack_and_cache(tmp_path, monkeypatch, capsys):
    with serve(FILES) as fake:
        monkeypatch.setenv("FIGSHARE_API_URL", fake.url)
        assert extraction.main(_args(tmp_path)) == 0
        # The archive wraps everything in MICRO/; --out holds raw_img/ and annotation/ directly.
        _assert_micro(tmp_path / "MICRO")
        assert (tmp_path / "MICRO" / "to_remove.txt").exists()
        assert (tmp_path / "cache" / NAME).read_bytes() == DATA
        assert "3 photos" in capsys.readouterr().out
        assert origin.read_origin(tmp_path / "MICRO")["kind"] == "download"
        extraction.main(_args(tmp_path, "--force"))  # rerun: served from the cache
    assert [entry[0] for entry in fake.log] == [f"/files/{NAME}"]
    _assert_micro(tmp_path / "MICRO")


def test_figshare_md5_mismatch_leaves_nothing(tmp_path):
    with serve(FILES) as fake:
        fake.overrides[NAME] = {"computed_md5": "0" * 32}
        with pytest.raises(UserError, match="md5") as err:
            extraction.main(_args(tmp_path, "--api-url", fake.url))
    assert "\n" not in str(err.value)
    _assert_no_output(tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []


def test_figshare_resumes_partial_download(tmp_path):
    have = len(DATA) // 2
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{NAME}.part").write_bytes(DATA[:have])
    with serve(FILES) as fake:
        extraction.main(_args(tmp_path, "--api-url", fake.url))
    assert [e for e in fake.log if e[0].startswith("/files/")] == [(f"/files/{NAME}", f"bytes={have}-",
                                                                     len(DATA) - have)]
    _assert_micro(tmp_path / "MICRO")


def test_unknown_subset_lists_the_article_files(tmp_path):
    with serve(FILES) as fake, pytest.raises(UserError, match="MESO.tar.gz, MICRO.tar.gz, README.txt"):
        extraction.main(_args(tmp_path, "--api-url", fake.url, "--subset", "MACRO"))
    _assert_no_output(tmp_path)


def test_offline_message(tmp_path):
    with pytest.raises(UserError) as err:
        extraction.main(_args(tmp_path, "--api-url", f"http://127.0.0.1:{closed_port()}", "--timeout", "5"))
    message = str(err.value)
    assert "\n" not in message and "--archive PATH" in message and "--synthetic" in message
    _assert_no_output(tmp_path)


def test_offline_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "data-extraction.py"), *_args(tmp_path),
                           "--api-url", f"http://127.0.0.1:{closed_port()}", "--timeout", "5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not reach")
    assert "--archive PATH" in lines[0] and "--synthetic" in lines[0]


@pytest.mark.parametrize("kind", ["flat tar.gz", "wrapped zip"])
def test_local_archive(tmp_path, kind):
    src = tmp_path / ("data.tgz" if kind == "flat tar.gz" else "data.zip")
    if kind == "flat tar.gz":
        src.write_bytes(tar_bytes(micro_files(2, top="")))
    else:
        with zipfile.ZipFile(src, "w") as zf:
            for name, data in micro_files(2, top="DeepParticle/MICRO").items():
                zf.writestr(name, data)
    extraction.main(_args(tmp_path, "--archive", str(src)))
    _assert_micro(tmp_path / "MICRO", n=2)
    assert not (tmp_path / "MICRO" / "DeepParticle").exists()
    assert origin.read_origin(tmp_path / "MICRO") == {"kind": "archive", "source": str(src), "subset": "MICRO"}


def test_unsafe_archive_leaves_nothing(tmp_path):
    src = tmp_path / "evil.tar.gz"
    src.write_bytes(tar_bytes({**micro_files(2), "../outside.txt": b"evil"}))
    with pytest.raises(UserError, match="refusing"):
        extraction.main(_args(tmp_path, "--archive", str(src)))
    _assert_no_output(tmp_path)
    assert not (tmp_path / "outside.txt").exists()


def test_archive_without_dataset_folders(tmp_path):
    src = tmp_path / "other.tar.gz"
    src.write_bytes(tar_bytes({"docs/readme.txt": b"x"}))
    with pytest.raises(UserError, match="no folder with both raw_img/ and annotation/.*docs"):
        extraction.main(_args(tmp_path, "--archive", str(src)))
    _assert_no_output(tmp_path)


def test_existing_out_needs_force(tmp_path):
    src = tmp_path / "data.tar.gz"
    src.write_bytes(tar_bytes(micro_files(2)))
    (tmp_path / "MICRO").mkdir()
    (tmp_path / "MICRO" / "stale.txt").write_text("old")
    with pytest.raises(UserError, match="already exists; pass --force"):
        extraction.main(_args(tmp_path, "--archive", str(src)))
    assert (tmp_path / "MICRO" / "stale.txt").exists()
    extraction.main(_args(tmp_path, "--archive", str(src), "--force"))
    assert not (tmp_path / "MICRO" / "stale.txt").exists()
    _assert_micro(tmp_path / "MICRO", n=2)


def test_gdrive_failure_is_one_clean_line(tmp_path, monkeypatch):
    import gdown

    def unreachable(**kwargs):
        raise ConnectionError("Failed to retrieve folder contents\nfrom Google Drive")

    monkeypatch.setattr(gdown, "download_folder", unreachable)
    with pytest.raises(UserError, match="Google Drive folder") as err:
        extraction.main(_args(tmp_path, "--source", "gdrive"))
    assert "\n" not in str(err.value) and "--archive PATH" in str(err.value)
    _assert_no_output(tmp_path)


@pytest.mark.parametrize("layout", ["subset archive", "photo folders"])
def test_gdrive_mirror(tmp_path, monkeypatch, layout):
    import gdown

    def fake_folder(id, output, **kwargs):
        assert id == download.GDRIVE_FOLDER
        files = {NAME: DATA} if layout == "subset archive" else micro_files(3)
        for name, data in files.items():
            (Path(output) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(output) / name).write_bytes(data)
        return [str(Path(output) / name) for name in files]

    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    extraction.main(_args(tmp_path, "--source", "gdrive"))
    _assert_micro(tmp_path / "MICRO")


def test_synthetic(tmp_path, capsys):
    extraction.main(_args(tmp_path, "--synthetic", "--n-images", "4", "--seed", "3"))
    out = tmp_path / "MICRO"
    photos = sorted(p.name for p in (out / "raw_img").iterdir())
    assert len(photos) == 4
    assert len(list((out / "annotation").glob("*.tsv"))) == 4
    assert "4 photos" in capsys.readouterr().out
    assert origin.read_origin(out) == {"kind": "synthetic", "generator": "data-extraction.py --synthetic",
                                       "photos": 4, "seed": 3, "image_size": [480, 640]}
    digest = hashlib.md5(b"".join((out / "raw_img" / p).read_bytes() for p in photos)).hexdigest()
    extraction.main(_args(tmp_path, "--synthetic", "--n-images", "4", "--seed", "3", "--force"))
    assert hashlib.md5(b"".join((out / "raw_img" / p).read_bytes() for p in photos)).hexdigest() == digest
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".MICRO")] == []


def test_bad_n_images(tmp_path):
    with pytest.raises(UserError, match="--n-images"):
        extraction.main(_args(tmp_path, "--synthetic", "--n-images", "0"))


def test_real_photos_from_a_local_tar(tmp_path, mp100):
    import tarfile

    src = tmp_path / "mp100.tar"
    with tarfile.open(src, "w") as tar:
        tar.add(mp100 / "MICRO", arcname="MICRO")
    extraction.main(_args(tmp_path, "--archive", str(src)))
    for folder in ("raw_img", "annotation"):
        original = sorted(p.name for p in (mp100 / "MICRO" / folder).iterdir())
        assert sorted(p.name for p in (tmp_path / "MICRO" / folder).iterdir()) == original
    photo = sorted((mp100 / "MICRO" / "raw_img").iterdir())[0]
    assert (tmp_path / "MICRO" / "raw_img" / photo.name).read_bytes() == photo.read_bytes()


def test_out_that_would_delete_the_archive_or_cwd_is_refused(tmp_path, monkeypatch):
    (tmp_path / "MICRO").mkdir()
    src = tmp_path / "MICRO" / "data.tar.gz"
    src.write_bytes(tar_bytes(micro_files(2)))
    with pytest.raises(UserError, match="holds --archive"):
        extraction.main(_args(tmp_path, "--archive", str(src), "--force"))
    assert src.exists()
    monkeypatch.chdir(tmp_path / "MICRO")
    with pytest.raises(UserError, match="holds the current folder"):
        extraction.main(["--out", str(tmp_path), "--archive", str(src), "--force"])
    assert src.exists()


def test_synthetic_randomise(tmp_path, capsys):
    extraction.main(_args(tmp_path, "--synthetic", "--randomise", "--n-images", "2", "--seed", "3"))
    out = tmp_path / "MICRO"
    assert "domain-randomised" in capsys.readouterr().out
    assert origin.read_origin(out)["randomised"] is True
    with pytest.raises(UserError, match="--randomise applies to --synthetic"):
        extraction.main(_args(tmp_path, "--randomise", "--out", str(tmp_path / "X")))
