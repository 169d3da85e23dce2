"""A failing backing store (issue 8): writers get the error at write() or
close(), nothing is published, the daemon goes on serving, no space is kept.

The failures are injected by a daemon built with -DKVFS_FAULT_INJECTION=ON
(CI's sanitizer stage), told through KVFS_FAULTS to fail one operation on
names with a given prefix, so one mount has failing and healthy blocks side by
side. A normal build must refuse KVFS_FAULTS, which is checked in every build."""

import errno
import os
import subprocess

import pytest

from conftest import block_data, block_name

PREFIX = "dead"


def faulty_name(i):
    return PREFIX + block_name(i)[len(PREFIX):]


def healthy_name(i):
    name = block_name(1000 + i)
    assert not name.startswith(PREFIX)
    return name


def staging_files(backing):
    return os.listdir(backing / ".kvfs-state" / "staging")


def published(backing, name):
    return (backing / ".kvfs-blocks" / name[:3] / name).exists()


@pytest.fixture
def faults(request):
    if not request.config.getoption("--kvfs-faults"):
        pytest.skip("the daemon was built without -DKVFS_FAULT_INJECTION (CI's sanitizer stage has it)")

    def env(spec):
        return {"KVFS_FAULTS": spec}

    return env


def write_block(path, data):
    """Writes and closes PATH; returns the errno of the first failure, or 0."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    err = 0
    try:
        os.write(fd, data)
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    return err


def check_still_serving(m, i):
    name = healthy_name(i)
    data = block_data(name, 256 << 10)
    assert write_block(m.mnt / name, data) == 0
    assert (m.mnt / name).read_bytes() == data
    assert published(m.backing, name)


@pytest.mark.parametrize("err", ["EIO", "ENOSPC"])
def test_write_error_reaches_writer_and_publishes_nothing(mount_factory, backing, faults, err):
    # Writes reach the daemon only off passthrough (passthrough writes go to
    # the backing file in the kernel, which reports its own errors).
    m = mount_factory(backing, options=["passthrough=off"], env=faults(f"write:{err}:{PREFIX}"))
    name = faulty_name(1)
    fd = os.open(m.mnt / name, os.O_CREAT | os.O_WRONLY, 0o644)
    with pytest.raises(OSError) as e:
        os.write(fd, block_data(name, 64 << 10))
    assert e.value.errno == getattr(errno, err)
    # The writer ignores the error and writes on: the file stays failed, and
    # close() reports it again rather than publishing a file with a hole.
    with pytest.raises(OSError):
        os.write(fd, b"more")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == getattr(errno, err)
    assert not os.path.exists(m.mnt / name)
    assert not published(backing, name)
    assert staging_files(backing) == []  # the space is given back
    check_still_serving(m, 1)


def test_publish_error_reaches_close(mount_factory, backing, faults):
    """fsync/link failing at publication (both data paths): close() fails."""
    m = mount_factory(backing, env=faults(f"publish:EIO:{PREFIX}"))
    before = m.stats()["publish_errors"]
    name = faulty_name(2)
    assert write_block(m.mnt / name, block_data(name, 1 << 20)) == errno.EIO
    assert not os.path.exists(m.mnt / name)
    assert not published(backing, name)
    assert staging_files(backing) == []
    assert m.stats()["publish_errors"] == before + 1
    assert "publishing '%s' failed" % name in m.log()
    check_still_serving(m, 2)


def test_create_error(mount_factory, backing, faults):
    m = mount_factory(backing, env=faults(f"create:EDQUOT:{PREFIX}"))
    name = faulty_name(3)
    with pytest.raises(OSError) as e:
        os.open(m.mnt / name, os.O_CREAT | os.O_WRONLY, 0o644)
    assert e.value.errno == errno.EDQUOT
    assert not os.path.exists(m.mnt / name)
    assert staging_files(backing) == []
    check_still_serving(m, 3)


def read_back_faulty(m, i, size):
    """Writes faulty block I of SIZE bytes through M and reads it back, which
    must fail: (its name, its content, the read's errno)."""
    name = faulty_name(i)
    data = block_data(name, size)
    assert write_block(m.mnt / name, data) == 0
    with pytest.raises(OSError) as e:
        (m.mnt / name).read_bytes()
    return name, data, e.value.errno


def test_read_error_is_reported_and_block_kept(mount_factory, backing, faults):
    """A failed load is reported as failed, never as short or wrong data, and
    the stored block is not harmed by it."""
    m = mount_factory(backing, options=["passthrough=off"], env=faults(f"read:EIO:{PREFIX}"))
    name, data, err = read_back_faulty(m, 4, 1 << 20)
    assert err == errno.EIO
    assert (backing / ".kvfs-blocks" / name[:3] / name).read_bytes() == data
    check_still_serving(m, 4)


def test_hung_backing_store_fails_the_request_not_the_caller(mount_factory, backing, faults):
    """A create that the backing store holds for 4 s is answered with EIO
    after request_timeout (1 s); meanwhile the daemon serves everything else,
    and when the store answers at last, the late create leaves nothing behind."""
    import threading
    import time

    m = mount_factory(backing, options=["request_timeout=1"], env=faults(f"create:HANG4:{PREFIX}"))
    name = faulty_name(5)
    result = {}

    def stuck_writer():
        t0 = time.time()
        try:
            os.open(m.mnt / name, os.O_CREAT | os.O_WRONLY, 0o644)
            result["err"] = 0
        except OSError as e:
            result["err"] = e.errno
        result["seconds"] = time.time() - t0

    t = threading.Thread(target=stuck_writer)
    t.start()
    time.sleep(0.2)
    check_still_serving(m, 5)  # other requests go on while that one is stuck
    t.join(10)
    assert result == {"err": errno.EIO, "seconds": pytest.approx(1.0, abs=1.2)}
    assert m.stats()["requests_timed_out"] == 1
    assert "answered with EIO after" in m.log()
    time.sleep(4)  # the store answers; the daemon's late reply finds no caller
    assert not os.path.exists(m.mnt / name)
    assert staging_files(backing) == []
    check_still_serving(m, 6)


def test_healthy_requests_never_time_out(mount_factory, backing):
    """A short request_timeout must never fail a request that is answered in
    time, however many there are (the watchdog once compared a request's start
    with an older clock reading and failed fresh reads). Any build."""
    import threading
    import time

    m = mount_factory(backing, options=["request_timeout=1", "passthrough=off"])
    names = [healthy_name(100 + i) for i in range(8)]
    for n in names:
        assert write_block(m.mnt / n, block_data(n, 1 << 16)) == 0
    errors = []
    stop = time.time() + 5

    def loop(i):
        while time.time() < stop:
            n = names[i % len(names)]
            i += 1
            try:
                assert (m.mnt / n).read_bytes() == block_data(n, 1 << 16)
                os.stat(m.mnt / n)
            except (OSError, AssertionError) as e:
                errors.append(e)
                return

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert m.stats()["requests_timed_out"] == 0


def test_hung_read_through_the_daemon_times_out(mount_factory, backing, faults):
    m = mount_factory(backing, options=["passthrough=off", "request_timeout=1"],
                      env=faults(f"read:HANG3:{PREFIX}"))
    assert read_back_faulty(m, 7, 1 << 16)[2] == errno.EIO
    assert m.stats()["requests_timed_out"] >= 1
    check_still_serving(m, 7)


def test_no_timeout_without_request_timeout(mount_factory, backing, faults):
    """request_timeout=0: a slow store is waited for, and the create succeeds."""
    m = mount_factory(backing, options=["request_timeout=0"], env=faults(f"create:HANG2:{PREFIX}"))
    name = faulty_name(8)
    assert write_block(m.mnt / name, block_data(name, 4096)) == 0
    assert m.stats()["requests_timed_out"] == 0


@pytest.mark.parametrize("spec", ["write", "nosuch:EIO", "write:EBOGUS", "read:0", "write:EIO:" + "a" * 300,
                                  "create:HANG0", "create:HANGx", "create:HANG601"])
def test_bad_fault_spec_refused(kvfs_bin, backing, tmp_path, faults, spec):
    r = subprocess.run([kvfs_bin, "-f", str(backing), str(tmp_path)], capture_output=True,
                       text=True, env=dict(os.environ, KVFS_FAULTS=spec), timeout=10)
    assert r.returncode == 2
    assert "KVFS_FAULTS" in r.stderr


def test_normal_build_refuses_faults(kvfs_bin, backing, tmp_path, request):
    if request.config.getoption("--kvfs-faults"):
        pytest.skip("this daemon was built with fault injection")
    r = subprocess.run([kvfs_bin, "-f", str(backing), str(tmp_path)], capture_output=True,
                       text=True, env=dict(os.environ, KVFS_FAULTS="write:EIO"), timeout=10)
    assert r.returncode == 2
    assert "built without fault injection" in r.stderr
    assert os.listdir(backing) == []  # refused before touching the store


def test_failed_successor_leaves_the_daemon_serving(mount_factory, backing, faults, tmp_path):
    """A successor that fails once it holds the state (as if it crashed before
    it was ready) changes nothing: the running daemon goes back to serving,
    with every open file as it was, and a later takeover succeeds."""
    sock = f"handover_socket={tmp_path / 'h.sock'}"
    m = mount_factory(backing, options=[sock])
    name = PREFIX + "a" * 28 + ".bin"
    writer = open(m.mnt / name, "wb")
    writer.write(b"x" * 50000)
    writer.flush()
    rc, old = m.takeover(m.options, env=faults("takeover:EIO"))
    assert rc == 1 and old is None
    assert "serving on" in m.log()
    writer.write(b"y" * 50000)
    writer.close()
    assert (m.mnt / name).read_bytes() == b"x" * 50000 + b"y" * 50000
    assert staging_files(backing) == []
    rc, old = m.takeover()
    assert (rc, old) == (0, 0), m.log()[-2000:]
    assert (m.mnt / name).read_bytes() == b"x" * 50000 + b"y" * 50000
