"""Development only: turn the shared JPEG copy of CIFAR-10 into the official binary layout.

    python tools/cifar10_from_jpeg.py ../shared/data/cifar10-jpeg.npz /tmp/cifar
    MINIRES_DATA=/tmp/cifar python -m minires degradation --data cifar10 --preset laptop

It writes ``DEST/cifar-10-batches-bin/`` with ``data_batch_1..5.bin`` and ``test_batch.bin``:
records of 3073 bytes (label byte, then the red, green and blue planes, 32x32 row-major each),
10000 per file, exactly the format `minires.data.cifar10.read_folder` parses. `load_cifar10` reads
an extracted folder as it is (the md5 check is for the downloaded archive), so the product's own
loader runs on the copy, and nothing in minires knows about JPEGs.

The copy is sorted by split and class; like the official release, the records are shuffled (seed
0) so that "the first N images" is a class-balanced random subset. Needs Pillow (a dev dependency,
never a dependency of minires). Pixels differ slightly from the official release (JPEG quality ~75).
"""
import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from minires.data.cifar10 import FOLDER_NAME, RECORDS_PER_FILE, TEST_FILE, TRAIN_FILES


def decode(npz_path, limit=None):
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,), train mask bool (N,)) of the JPEG copy
    (its first `limit` images, default all)."""
    with np.load(npz_path, allow_pickle=False) as archive:
        data, offsets = archive["data"], archive["offsets"]
        labels, train = archive["labels"][:limit], archive["train"][:limit]
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for i in tqdm(range(len(labels)), desc="decoding JPEGs", unit="img", mininterval=1):
        jpeg = data[offsets[i]:offsets[i + 1]].tobytes()
        images[i] = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).transpose(2, 0, 1)
    return images, labels, train


def records(images, labels):
    """Binary records (N, 3073): the label byte, then the image's planes as stored (C, H, W)."""
    return np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)],
                          axis=1)


def write_binary_folder(images, labels, train, dest, seed=0):
    """Shuffle each split and write the five training files and the test file under dest."""
    folder = Path(dest) / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = ((np.flatnonzero(train), TRAIN_FILES), (np.flatnonzero(~train), (TEST_FILE,)))
    for index, names in splits:
        rows = records(images, labels)[rng.permutation(index)]
        if len(rows) != RECORDS_PER_FILE * len(names):
            raise ValueError(f"expected {RECORDS_PER_FILE * len(names)} images, got {len(rows)}")
        for name, chunk in zip(names, np.split(rows, len(names))):
            (folder / name).write_bytes(chunk.tobytes())
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", help="the JPEG copy, e.g. ../shared/data/cifar10-jpeg.npz")
    parser.add_argument("dest", help="folder to point MINIRES_DATA at")
    args = parser.parse_args()
    print("wrote", write_binary_folder(*decode(args.npz), args.dest))


if __name__ == "__main__":
    main()
