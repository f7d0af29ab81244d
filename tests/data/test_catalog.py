"""data/catalog.py: the dataset fingerprint a run records, against a hand computation."""
import hashlib
import os

from simformer.data.catalog import dataset_fingerprint


def _records(tmp_path, sizes):
    records = []
    for i, (image, label) in enumerate(sizes):
        (tmp_path / f"im{i}.jpg").write_bytes(b"x" * image)
        (tmp_path / f"im{i}.png").write_bytes(b"y" * label)
        records.append({"file_name": str(tmp_path / f"im{i}.jpg"), "sem_seg_file_name": str(tmp_path / f"im{i}.png")})
    return records


def test_fingerprint_hashes_names_and_sizes_in_record_order(tmp_path):
    records = _records(tmp_path, [(10, 3), (7, 5)])
    hand = hashlib.sha256(b"im0.jpg\t10\nim0.png\t3\nim1.jpg\t7\nim1.png\t5\n").hexdigest()
    assert dataset_fingerprint(records) == {"records": 2, "bytes": 25, "sha256": hand}
    os.utime(records[0]["file_name"], (0, 0))  # a touched file is the same data
    assert dataset_fingerprint(records)["sha256"] == hand
    (tmp_path / "im1.png").write_bytes(b"y" * 6)  # a label re-encoded to another size is not
    changed = dataset_fingerprint(records)
    assert changed["sha256"] != hand and changed["bytes"] == 26
    assert dataset_fingerprint(records[::-1])["sha256"] != hand
