"""The filesystem layer behaves the same on every backend: local files, Beam's FileSystems and
TensorFlow's gfile (its in-process ram:// filesystem stands for gs://, which needs an account)."""
from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from pipelines.core import fs


def backends(tmp_path):
    return {"local": (fs._make_backend("local"), str(tmp_path / "local")),
            "beam": (fs._make_backend("beam"), str(tmp_path / "beam")),
            "gfile": (fs._make_backend("gfile"), f"ram://fs-{uuid.uuid4().hex}")}


@pytest.mark.parametrize("kind", ["local", "beam", "gfile"])
def test_backend_conformance(tmp_path, kind):
    backend, root = backends(tmp_path)[kind]
    backend.makedirs(fs.join(root, "a", "b"))
    with backend.open(fs.join(root, "a", "b", "x.txt"), "wb") as handle:
        handle.write(b"hello")
    with backend.open(fs.join(root, "a", "y.txt"), "w") as handle:
        handle.write("wörld")
    assert backend.exists(fs.join(root, "a", "b", "x.txt")) and backend.isdir(fs.join(root, "a"))
    assert not backend.exists(fs.join(root, "missing"))
    assert backend.listdir(fs.join(root, "a")) == ["b", "y.txt"]
    assert [p.rsplit("/", 1)[-1] for p in backend.glob(fs.join(root, "a", "*.txt"))] == ["y.txt"]
    with backend.open(fs.join(root, "a", "y.txt"), "r") as handle:
        assert handle.read() == "wörld"
    assert backend.size(fs.join(root, "a", "y.txt")) == len("wörld".encode()) == 6
    assert backend.create_exclusive(fs.join(root, "lock"), b"mine")
    assert not backend.create_exclusive(fs.join(root, "lock"), b"theirs")
    backend.rename(fs.join(root, "a"), fs.join(root, "c"), False)   # a directory moves whole
    assert not backend.exists(fs.join(root, "a", "y.txt"))
    with backend.open(fs.join(root, "c", "b", "x.txt"), "rb") as handle:
        assert handle.read() == b"hello"
    backend.remove(fs.join(root, "c"))
    backend.remove(fs.join(root, "c"))                                 # removing what is gone is fine
    assert not backend.exists(fs.join(root, "c", "b", "x.txt"))


@pytest.mark.parametrize("root", ["{tmp}", "ram://range"])
def test_a_range_is_read_from_its_start_and_a_short_file_is_an_error(tmp_path, root):
    path = fs.join(root.format(tmp=tmp_path), f"r-{uuid.uuid4().hex}.bin")
    fs.write_bytes(path, bytes(range(100)))
    assert fs.read_range(path, 10, 5) == bytes([10, 11, 12, 13, 14])
    with pytest.raises(OSError, match="8 of 10 bytes at byte 92: the file is shorter than expected"):
        fs.read_range(path, 92, 10)


def test_module_functions_route_by_scheme(tmp_path):
    remote = f"ram://route-{uuid.uuid4().hex}"
    fs.write_text_atomic(fs.join(remote, "m.json"), "{}")
    fs.write_text_atomic(fs.join(remote, "m.json"), '{"a": 1}')
    assert fs.read_text(fs.join(remote, "m.json")) == '{"a": 1}' and fs.listdir(remote) == ["m.json"]
    table = pa.table({"key": ["a", "b"], "n": [1, 2]}).replace_schema_metadata({"run_id": "r"})
    fs.write_parquet(table, fs.join(remote, "t", "part-0.parquet"))
    assert fs.read_parquet(fs.join(remote, "t")).equals(table)
    assert fs.read_parquet_schema(fs.join(remote, "t")).metadata[b"run_id"] == b"r"
    fs.copy_tree(remote, str(tmp_path / "copy"))                       # across backends
    assert fs.read_parquet(str(tmp_path / "copy" / "t")).column("n").to_pylist() == [1, 2]
    with fs.local_copy(fs.join(remote, "m.json")) as local:
        assert open(local).read() == '{"a": 1}'
    with fs.local_target(fs.join(remote, "out", "f.bin")) as local:
        open(local, "wb").write(b"\x00\x01")
    assert fs.read_bytes(fs.join(remote, "out", "f.bin")) == b"\x00\x01"
    assert fs.walk_files(remote) == sorted(fs.join(remote, p) for p in
                                           ("m.json", "t/part-0.parquet", "out/f.bin"))


def test_failed_atomic_write_names_the_target_and_leaves_nothing(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    target = str(tmp_path / "blocker" / "manifest.json")
    with pytest.raises(OSError, match="cannot write .*blocker/manifest.json"):
        fs.write_text_atomic(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.json").mkdir()   # a directory in the way of the rename
    with pytest.raises(OSError, match="cannot write .*d/manifest.json") as error:
        fs.write_text_atomic(str(tmp_path / "d" / "manifest.json"), "{}")
    assert ".tmp-" not in str(error.value)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["manifest.json"]
