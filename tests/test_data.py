"""Tests for minires.data: CIFAR-10 parsing and safety, synthetic data, augmentation, DataLoader.

No test touches the network: CIFAR-10 tests build tiny fake binary files and tarballs in tmp_path
(RECORDS_PER_FILE is patched down from 10000), and downloads go to file:// URLs or a stub.
"""
import hashlib
import io
import tarfile
import urllib.error

import numpy as np
import pytest

from minires import backend
from minires.data import (CLASSES, MEAN, STD, URL, ChecksumError, DataLoader, DatasetNotFound,
                          UnsafeArchiveError, cifar10, load_cifar10, normalize, random_crop,
                          random_flip, safe_extract, synthetic_cifar, verify_md5)

RECORDS = 3  # records per fake .bin file


# ---------------------------------------------------------------- fake CIFAR-10 files

def fake_records(labels, seed):
    """Binary records with the given labels and random pixels; returns (bytes, images)."""
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rows = np.concatenate([np.array(labels, dtype=np.uint8)[:, None],
                           images.reshape(len(labels), -1)], axis=1)   # (N, 3073)
    return rows.tobytes(), images


def fake_files():
    """{file name: (bytes, images, labels)} for the five training files and the test file."""
    files = {}
    for i, name in enumerate(cifar10.TRAIN_FILES + (cifar10.TEST_FILE,)):
        labels = [(i + j) % 10 for j in range(RECORDS)]
        raw, images = fake_records(labels, seed=i)
        files[name] = (raw, images, np.array(labels))
    return files


def write_folder(root, files):
    folder = root / cifar10.FOLDER_NAME
    folder.mkdir(parents=True)
    for name, (raw, _, _) in files.items():
        (folder / name).write_bytes(raw)


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, (raw, _, _) in files.items():
            add_bytes(tar, f"{cifar10.FOLDER_NAME}/{name}", raw)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def small_files(monkeypatch):
    """Fake files of RECORDS records each; downloads fail loudly if anything tries one."""
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", RECORDS)

    def no_network(*args, **kwargs):
        raise AssertionError("test tried to download")
    monkeypatch.setattr(cifar10, "download", no_network)
    return fake_files()


def check_splits(splits, files):
    train = [files[name] for name in cifar10.TRAIN_FILES]
    _, test_images, test_labels = files[cifar10.TEST_FILE]
    assert splits.x_train.shape == (5 * RECORDS, 3, 32, 32) and splits.x_train.dtype == np.uint8
    assert splits.y_train.shape == (5 * RECORDS,) and splits.y_train.dtype == np.int64
    np.testing.assert_array_equal(splits.x_train, np.concatenate([f[1] for f in train]))
    np.testing.assert_array_equal(splits.y_train, np.concatenate([f[2] for f in train]))
    np.testing.assert_array_equal(splits.x_test, test_images)
    np.testing.assert_array_equal(splits.y_test, test_labels)


# ---------------------------------------------------------------- CIFAR-10

def test_constants():
    assert len(CLASSES) == 10 and CLASSES[0] == "airplane" and CLASSES[9] == "truck"
    assert MEAN == (0.4914, 0.4822, 0.4465) and STD == (0.2470, 0.2435, 0.2616)
    assert URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def test_parse_hand_built_record():
    """Byte layout: label, then 1024 red, 1024 green, 1024 blue, each 32 rows of 32, row-major."""
    record = bytearray(3073)
    record[0] = 7
    record[1 + 0 * 1024 + 0 * 32 + 1] = 200    # red,   row 0,  column 1
    record[1 + 1 * 1024 + 31 * 32 + 0] = 17    # green, row 31, column 0
    record[1 + 2 * 1024 + 5 * 32 + 6] = 99     # blue,  row 5,  column 6
    second = bytes([3]) + bytes(range(256)) * 12
    images, labels = cifar10.parse_records(bytes(record) + second)
    assert labels.tolist() == [7, 3] and labels.dtype == np.int64
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert images[0, 0, 0, 1] == 200 and images[0, 1, 31, 0] == 17 and images[0, 2, 5, 6] == 99
    assert images[0].sum() == 200 + 17 + 99
    assert images[1, 0, 0, 5] == 5 and images[1, 0, 1, 0] == 32 and images[1, 1, 0, 0] == 1024 % 256


def test_parse_rejects_partial_record():
    with pytest.raises(ValueError, match="3073-byte records"):
        cifar10.parse_records(bytes(3073 + 10))


def test_labels_out_of_range_are_refused(tmp_path, small_files):
    """A record with label byte 200 used to load silently; now the error names file and record."""
    with pytest.raises(ValueError, match=r"record 1 has label 200, but CIFAR-10 labels are 0..9"):
        cifar10.parse_records(fake_records([3, 200, 10], seed=0)[0])
    raw, images, labels = small_files[cifar10.TEST_FILE]
    small_files[cifar10.TEST_FILE] = (b"\xc8" + raw[1:], images, labels)  # record 0: label 200
    write_folder(tmp_path, small_files)
    with pytest.raises(ValueError, match=r"test_batch\.bin: record 0 has label 200.*delete the "
                                         r"folder"):
        load_cifar10(tmp_path, download=False)


def test_bin_file_size_checked(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(3073 * 9999))
    with pytest.raises(ValueError, match=r"data_batch_1\.bin: 30726927 bytes, expected 30730000"):
        cifar10.read_batch_file(path)


def test_load_from_extracted_folder(tmp_path, small_files):
    write_folder(tmp_path, small_files)
    check_splits(load_cifar10(tmp_path, download=False), small_files)


def test_load_from_archive_in_root(tmp_path, small_files):
    md5 = write_archive(tmp_path / cifar10.ARCHIVE_NAME, small_files)
    check_splits(load_cifar10(tmp_path, md5=md5), small_files)
    assert (tmp_path / cifar10.FOLDER_NAME / "test_batch.bin").is_file()
    assert not list(tmp_path.rglob("*.part"))


def test_root_defaults_to_env(tmp_path, small_files, monkeypatch):
    monkeypatch.setenv("MINIRES_DATA", str(tmp_path))
    write_folder(tmp_path, small_files)
    check_splits(load_cifar10(), small_files)


def test_md5_mismatch_is_clear_and_blocks_extraction(tmp_path, small_files):
    archive = tmp_path / cifar10.ARCHIVE_NAME
    write_archive(archive, small_files)
    with pytest.raises(ChecksumError, match="expected 0123456789abcdef"):
        load_cifar10(tmp_path, md5="0123456789abcdef0123456789abcdef")
    assert not (tmp_path / cifar10.FOLDER_NAME).exists()


def test_verify_md5(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"minires")
    verify_md5(path, hashlib.md5(b"minires").hexdigest())
    with pytest.raises(ChecksumError) as err:
        verify_md5(path, cifar10.MD5)
    assert str(path) in str(err.value) and cifar10.MD5 in str(err.value)


def bad_tar(path, member):
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "cifar-10-batches-bin/ok.bin", b"fine")
        tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return path


def file_member(name):
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def link_member(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def device_member(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member, message", [
    (file_member("../evil"), "'..'"),
    (file_member("cifar-10-batches-bin/../../evil"), "'..'"),
    (file_member("/tmp/minires_evil"), "absolute"),
    (link_member("cifar-10-batches-bin/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (link_member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "/etc/passwd"), "link"),
    (device_member("cifar-10-batches-bin/dev"), "device"),
])
def test_safe_extract_rejects_bad_members(tmp_path, member, message):
    archive = bad_tar(tmp_path / "bad.tar", member)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, dest)
    assert not any(dest.iterdir()), "nothing may be written when any member is unsafe"
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", [".", "./", ""])
def test_a_file_named_as_the_target_folder_writes_nothing_outside(tmp_path, small_files, name):
    """A tar member '.' (a file) used to write <root>.part beside the data root when the checksum
    check was off; now it is refused before anything is written, inside or outside the root."""
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / cifar10.ARCHIVE_NAME, "w:gz") as tar:
        tar.addfile(file_member(name), io.BytesIO(b"evil"))
    with pytest.raises(UnsafeArchiveError, match="named as the target folder itself"):
        load_cifar10(root, md5=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert [p.name for p in root.iterdir()] == [cifar10.ARCHIVE_NAME]


def test_safe_extract_writes_regular_files(tmp_path):
    archive = tmp_path / "good.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "a/b.bin", b"bytes")
    assert safe_extract(archive, tmp_path / "out") == [(tmp_path / "out" / "a" / "b.bin").resolve()]
    assert (tmp_path / "out" / "a" / "b.bin").read_bytes() == b"bytes"


def test_offline_error_names_paths_and_url(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(cifar10, "download", offline)
    with pytest.raises(DatasetNotFound) as err:
        load_cifar10(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-binary.tar.gz") in message
    assert str(tmp_path / "cifar-10-batches-bin") in message
    assert URL in message and "Name or service not known" in message
    assert isinstance(err.value, FileNotFoundError)


def test_download_false_never_downloads(tmp_path, small_files):
    with pytest.raises(DatasetNotFound, match="download=False"):
        load_cifar10(tmp_path, download=False)


def test_download_writes_complete_file_only(tmp_path):
    source = tmp_path / "source.tar.gz"
    source.write_bytes(b"x" * 100_000)
    target = tmp_path / "cache" / "archive.tar.gz"
    cifar10.download(source.as_uri(), target, progress=False)
    assert target.read_bytes() == source.read_bytes()
    assert not (tmp_path / "cache" / "archive.tar.gz.part").exists()
    with pytest.raises(urllib.error.URLError):
        cifar10.download((tmp_path / "missing").as_uri(), tmp_path / "other", progress=False)
    assert not list(tmp_path.glob("other*"))


# ---------------------------------------------------------------- synthetic data

def test_synthetic_shapes_dtypes_balance():
    x_train, y_train, x_test, y_test = synthetic_cifar(203, 50, num_classes=7, image_size=16)
    assert x_train.shape == (203, 3, 16, 16) and x_train.dtype == np.uint8
    assert x_test.shape == (50, 3, 16, 16) and y_test.shape == (50,)
    assert y_train.dtype == np.int64 and set(np.unique(y_train)) == set(range(7))
    counts = np.bincount(y_train, minlength=7)
    assert counts.max() - counts.min() <= 1
    assert x_train.std() > 20, "images should not be flat"


def test_synthetic_is_deterministic():
    a, b = synthetic_cifar(64, 16, seed=3), synthetic_cifar(64, 16, seed=3)
    c = synthetic_cifar(64, 16, seed=4)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_is_learnable():
    """A nearest-class-mean classifier fit on train must beat chance by far on test."""
    x_train, y_train, x_test, y_test = synthetic_cifar(1000, 300, seed=0)
    flat_train = x_train.reshape(len(x_train), -1).astype(np.float32)
    flat_test = x_test.reshape(len(x_test), -1).astype(np.float32)
    means = np.stack([flat_train[y_train == k].mean(0) for k in range(10)])  # (10, 3072)
    distances = ((flat_test[:, None, :] - means[None]) ** 2).sum(-1)          # (300, 10)
    assert (distances.argmin(1) == y_test).mean() > 0.8


# ---------------------------------------------------------------- augmentation

def naive_crops(padded, size):
    """Every offset (oy, ox) whose window of `padded` is the given crop, by plain loops."""
    def matches(crop):
        return [(oy, ox) for oy in range(padded.shape[1] - size + 1)
                for ox in range(padded.shape[2] - size + 1)
                if np.array_equal(padded[:, oy:oy + size, ox:ox + size], crop)]
    return matches


def test_random_crop_equals_a_window_of_the_padded_image():
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 256, (300, 3, 8, 8), dtype=np.uint8)  # no zeros: padding is visible
    out = random_crop(batch, 4, rng)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    offsets = []
    for image, crop in zip(batch, out):
        padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
        found = naive_crops(padded, 8)(crop)
        assert len(found) == 1, "each crop must be exactly one window of its own padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 60, "offsets should vary per image over the 81 possible"
    assert {oy for oy, _ in offsets} == set(range(9)) and {ox for _, ox in offsets} == set(range(9))


def test_random_crop_zero_padding_is_identity():
    batch = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(random_crop(batch, 0, np.random.default_rng(0)), batch)


def test_random_flip_mirrors_about_half():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (4000, 3, 4, 5), dtype=np.uint8)
    out = random_flip(batch, rng)
    flipped = np.all(out == batch[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == batch, axis=(1, 2, 3))
    assert np.all(flipped ^ kept), "every image is either exactly mirrored or untouched"
    assert 0.46 < flipped.mean() < 0.54


def test_normalize_math():
    batch = np.zeros((2, 3, 1, 2), dtype=np.uint8)
    batch[0, :, 0, 0] = 255
    batch[1, 1, 0, 1] = 51
    out = normalize(batch, mean=(0.5, 0.2, 0.0), std=(0.25, 0.1, 2.0))
    assert out.dtype == np.float32 and out.shape == batch.shape
    expected = np.empty((2, 3, 1, 2), dtype=np.float32)
    expected[:, 0], expected[:, 1], expected[:, 2] = -2.0, -2.0, 0.0
    expected[0, :, 0, 0] = [2.0, 8.0, 0.5]
    expected[1, 1, 0, 1] = 0.0
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 3, 1, 2\).*len\(mean\) = 2"):
        normalize(batch, mean=(0.5, 0.5), std=(1.0, 1.0))


# ---------------------------------------------------------------- DataLoader

def indexed_set(n, size=8):
    """Images whose label is their index, so a batch shows which samples it holds."""
    images = np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return images, np.arange(n)


def epoch(loader):
    """One epoch as NumPy (x, y) pairs, whatever the loader's device."""
    return [(backend.to_numpy(x), backend.to_numpy(y)) for x, y in loader]


def epoch_labels(loader):
    return [y for _, y in epoch(loader)]


def test_loader_batches(device):
    images, labels = indexed_set(10)
    loader = DataLoader(images, labels, batch_size=4, seed=0, device=device)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert backend.device_of(x) == device and backend.device_of(y) == device
    assert x.dtype == np.float32 and x.shape == (4, 3, 8, 8) and y.dtype == np.int64
    expected = normalize(images[backend.to_numpy(y)], MEAN, STD)
    np.testing.assert_allclose(backend.to_numpy(x), expected, rtol=1e-6)


def test_loader_drop_last():
    loader = DataLoader(*indexed_set(10), batch_size=4, drop_last=True, seed=0)
    assert len(loader) == 2 and [len(y) for y in epoch_labels(loader)] == [4, 4]
    assert len(DataLoader(*indexed_set(8), batch_size=4, drop_last=True)) == 2


def test_loader_without_normalize_scales_to_unit_interval():
    images, labels = indexed_set(5)
    [(x, y)] = epoch(DataLoader(images, labels, batch_size=5, shuffle=False, normalize=False))
    np.testing.assert_allclose(x, images / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_loader_covers_every_index_once_and_reshuffles():
    loader = DataLoader(*indexed_set(103), batch_size=16, seed=0)
    first, second = np.concatenate(epoch_labels(loader)), np.concatenate(epoch_labels(loader))
    np.testing.assert_array_equal(np.sort(first), np.arange(103))
    np.testing.assert_array_equal(np.sort(second), np.arange(103))
    assert not np.array_equal(first, np.arange(103)), "shuffle=True must shuffle"
    assert not np.array_equal(first, second), "each epoch needs a new permutation"
    unshuffled = DataLoader(*indexed_set(103), batch_size=16, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(epoch_labels(unshuffled)), np.arange(103))


def test_loader_seed_reproduces_order_and_augmentation():
    a = DataLoader(*indexed_set(50), batch_size=8, augment=True, seed=5)
    b = DataLoader(*indexed_set(50), batch_size=8, augment=True, seed=5)
    c = DataLoader(*indexed_set(50), batch_size=8, augment=True, seed=6)
    for _ in range(2):
        batches_a, batches_b, batches_c = epoch(a), epoch(b), epoch(c)
        for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(xa, xb)
        assert not np.array_equal(batches_a[0][1], batches_c[0][1])


def test_loader_augment_changes_images_but_keeps_labels():
    images, labels = indexed_set(64)
    [(x, y)] = epoch(DataLoader(images, labels, batch_size=64, augment=True, seed=0))
    plain = normalize(images[y], MEAN, STD)
    assert x.shape == plain.shape
    assert not np.allclose(x, plain), "augmentation should change most images"


def test_loader_state_dict_round_trip_through_npz(tmp_path):
    a = DataLoader(*indexed_set(40), batch_size=8, augment=True, seed=1)
    epoch_labels(a)                                                 # one epoch in
    np.savez(tmp_path / "loader.npz", **a.state_dict())
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    expected = epoch(a)                                             # the next epoch
    b = DataLoader(*indexed_set(40), batch_size=8, augment=True, seed=99)
    with np.load(tmp_path / "loader.npz") as saved:
        b.load_state_dict(dict(saved))
    for (xa, ya), (xb, yb) in zip(expected, epoch(b)):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


@pytest.mark.parametrize("images, labels, error, message", [
    (np.zeros((10, 32, 32, 3), np.uint8), np.zeros(10), ValueError,
     r"\(N, 3, H, W\), got shape \(10, 32, 32, 3\); it looks channels-last"),
    (np.zeros((10, 3, 32), np.uint8), np.zeros(10), ValueError, r"got shape \(10, 3, 32\)"),
    (np.zeros((10, 3, 8, 8), np.float32), np.zeros(10), TypeError, "uint8 pixels.*float32"),
    (np.zeros((10, 3, 8, 8), np.uint8), np.zeros(9), ValueError,
     r"labels must have shape \(10,\) to match images \(10, 3, 8, 8\), got \(9,\)"),
])
def test_loader_rejects_bad_inputs_with_shapes(images, labels, error, message):
    with pytest.raises(error, match=message):
        DataLoader(images, labels, batch_size=4)
