"""What clients see through the mount: namespaces, flat block listings over
the backing store's fan-out, stat, rename, xattrs, statfs, the control
directory."""

import errno
import os
import subprocess

import pytest

from conftest import block_data, block_name


def bucket_path(backing, ns, name):
    return backing / ns / ".kvfs-blocks" / name[:3].lower() / name


def test_namespace_dirs_any_depth(kvfs):
    deep = kvfs.mnt / "llama-3-8b_0123abcd" / "tp1" / "rank0" / "g0"
    deep.mkdir(parents=True)
    assert deep.is_dir()
    assert (kvfs.backing / "llama-3-8b_0123abcd" / "tp1" / "rank0" / "g0").is_dir()
    assert sorted(os.listdir(kvfs.mnt)) == [".kvfs", "llama-3-8b_0123abcd"]


def test_block_written_read_and_laid_out(kvfs):
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(1)
    data = block_data(name, 3 * 1024 * 1024 + 17)
    (ns / name).write_bytes(data)
    assert (ns / name).read_bytes() == data
    st = os.stat(ns / name)
    assert st.st_size == len(data)
    backing_file = bucket_path(kvfs.backing, "ns", name)
    assert backing_file.read_bytes() == data
    assert os.stat(backing_file).st_ino == st.st_ino
    # The fan-out never shows through the mount; the backing dir holds it.
    assert os.listdir(ns) == [name]
    assert not (ns / ".kvfs-blocks").exists()
    assert os.listdir(kvfs.backing / "ns") == [".kvfs-blocks"]
    s = kvfs.stats()
    assert s["blocks_published"] == 1 and s["bytes_written"] == len(data)


def test_flat_listing_over_fanout(kvfs):
    ns = kvfs.mnt / "big"
    ns.mkdir()
    names = {block_name(i) for i in range(300)} | {block_name(i, "") for i in range(300, 310)}
    for n in names:
        (ns / n).write_bytes(n.encode())
    (ns / "config.json").write_text("{}")
    (ns / "sub").mkdir()
    listed = os.listdir(ns)
    assert len(listed) == len(set(listed))
    assert set(listed) == names | {"config.json", "sub"}
    # ls -l goes through readdirplus; every entry has its real attributes.
    out = subprocess.run(["ls", "-ln", str(ns)], capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == len(names) + 3
    buckets = os.listdir(kvfs.backing / "big" / ".kvfs-blocks")
    assert len(buckets) > 1 and all(len(b) == 3 for b in buckets)
    with os.scandir(ns) as it:
        for e in it:
            if e.name in names:
                assert e.is_file() and e.stat().st_size == len(e.name)


def test_hash_named_directory_is_a_directory(kvfs):
    d = kvfs.mnt / "0123456789abcdef0123456789abcdef"
    d.mkdir()
    (d / "x.txt").write_text("hi")
    assert (kvfs.backing / "0123456789abcdef0123456789abcdef" / "x.txt").read_text() == "hi"
    with pytest.raises(FileExistsError):
        (kvfs.mnt / "0123456789abcdef0123456789abcdef").mkdir()
    # A block cannot take a directory's name, nor a directory a block's.
    with pytest.raises(IsADirectoryError):
        open(d, "wb")
    (kvfs.mnt / "fedcba9876543210").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        os.mkdir(kvfs.mnt / "fedcba9876543210")


def test_unlink_and_rmdir(kvfs):
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(5)
    (ns / name).write_bytes(b"abc")
    with pytest.raises(OSError) as e:
        os.rmdir(ns)
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(ns / name)
    assert not (ns / name).exists()
    assert not bucket_path(kvfs.backing, "ns", name).exists()
    os.rmdir(ns)  # the empty fan-out buckets go with it
    assert not (kvfs.backing / "ns").exists()


def test_client_temp_then_rename(kvfs):
    """vLLM's filesystem tier: O_EXCL temp file, close, os.replace to the final
    name. The rename is the publication."""
    d = kvfs.mnt / "model_r0" / "000" / "10_g0"
    d.mkdir(parents=True)
    name = "0001020304050607" + "08" * 24 + ".bin"
    data = block_data(name, 1 << 20)
    tmp = d / (name + "_123456789.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    assert os.access(tmp, os.F_OK)
    assert not os.access(d / name, os.F_OK)
    os.replace(tmp, d / name)
    assert os.access(d / name, os.F_OK)
    assert not tmp.exists()
    assert (d / name).read_bytes() == data
    assert bucket_path(kvfs.backing, "model_r0/000/10_g0", name).read_bytes() == data
    assert sorted(os.listdir(d)) == [name]
    # A second instance storing the same block by rename keeps the first copy.
    tmp2 = d / (name + "_987.tmp")
    tmp2.write_bytes(data)
    os.replace(tmp2, d / name)
    assert sorted(os.listdir(d)) == [name]
    assert (d / name).read_bytes() == data


def test_rename_files_and_dirs(kvfs):
    a = kvfs.mnt / "a"
    a.mkdir()
    (a / "f.txt").write_text("one")
    os.rename(a / "f.txt", a / "g.txt")
    assert (a / "g.txt").read_text() == "one" and not (a / "f.txt").exists()
    (a / "h.txt").write_text("two")
    os.rename(a / "h.txt", a / "g.txt")  # non-blocks: last writer wins
    assert (a / "g.txt").read_text() == "two"
    blk = block_name(9)
    (a / blk).write_bytes(b"blk")
    os.rename(a, kvfs.mnt / "b")  # a namespace moves with its blocks
    assert (kvfs.mnt / "b" / blk).read_bytes() == b"blk"
    os.mkdir(kvfs.mnt / "c")
    os.rename(kvfs.mnt / "b" / blk, kvfs.mnt / "c" / blk)
    assert (kvfs.mnt / "c" / blk).read_bytes() == b"blk"
    assert bucket_path(kvfs.backing, "c", blk).exists()
    os.rename(kvfs.mnt / "c" / blk, kvfs.mnt / "c" / "plain.bin")
    assert (kvfs.backing / "c" / "plain.bin").read_bytes() == b"blk"
    with pytest.raises(OSError) as e:
        os.rename(kvfs.mnt / "c", kvfs.mnt / ".kvfs-sneaky")
    assert e.value.errno == errno.EPERM


def test_user_xattrs_pass_through(kvfs):
    name = block_name(3)
    p = kvfs.mnt / name
    p.write_bytes(b"x")
    os.setxattr(p, "user.kvfs.test", b"v1")
    assert os.getxattr(p, "user.kvfs.test") == b"v1"
    assert "user.kvfs.test" in os.listxattr(p)
    assert os.getxattr(bucket_path(kvfs.backing, "", name), "user.kvfs.test") == b"v1"
    os.removexattr(p, "user.kvfs.test")
    assert "user.kvfs.test" not in os.listxattr(p)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "trusted.x", b"v")
    assert e.value.errno == errno.EOPNOTSUPP


def test_statfs_from_backing(kvfs):
    a = os.statvfs(kvfs.mnt)
    b = os.statvfs(kvfs.backing)
    assert a.f_bsize == b.f_bsize and a.f_blocks == b.f_blocks


def test_fsync_and_utimes(kvfs):
    p = kvfs.mnt / "f.txt"
    with open(p, "wb") as f:
        f.write(b"data")
        f.flush()
        os.fsync(f.fileno())
    os.utime(p, (1000000000, 1000000000))
    assert os.stat(p).st_mtime == 1000000000
    os.chmod(p, 0o600)
    assert os.stat(kvfs.backing / "f.txt").st_mode & 0o777 == 0o600


def test_control_directory(kvfs):
    ctl = kvfs.mnt / ".kvfs"
    assert sorted(os.listdir(ctl)) == ["metrics", "stats"]
    (kvfs.mnt / block_name(1)).write_bytes(b"abcd")
    (kvfs.mnt / block_name(1)).read_bytes()
    os.path.exists(kvfs.mnt / block_name(2))
    stats = kvfs.stats()
    for key in ["blocks_published", "bytes_written", "bytes_read", "lookups", "lookup_misses",
                "publish_conflicts", "errors", "data_mode"]:
        assert key in stats
    assert stats["blocks_published"] == 1 and stats["bytes_written"] == 4
    assert stats["lookup_misses"] >= 1
    # Passthrough reads never reach the daemon, so it cannot count them.
    assert stats["bytes_read"] == (0 if stats["data_mode"] == "passthrough" else 4)
    metrics = (ctl / "metrics").read_text()
    assert "# TYPE kvfs_blocks_published_total counter" in metrics
    assert "kvfs_blocks_published_total 1" in metrics
    for line in metrics.splitlines():
        assert line.startswith("#") or len(line.split()) == 2
    # The state folder never shows through the mount.
    assert ".kvfs-state" not in os.listdir(kvfs.mnt)
    assert not os.path.exists(kvfs.mnt / ".kvfs-state")
    assert (kvfs.backing / ".kvfs-state").is_dir()


def test_cat_stats(kvfs):
    out = subprocess.run(["cat", str(kvfs.mnt / ".kvfs" / "stats")], capture_output=True,
                         text=True, check=True).stdout
    assert "blocks_published" in out and "data_mode" in out
