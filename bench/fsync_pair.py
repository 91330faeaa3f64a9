"""Does one durable write wait for another's on this disk?

4 KiB written and fdatasync-ed 1,500 times to one file alone, then to two
files at once from two threads (as two tenants' logs would be), appended
and in place (into a file written and synced before). Prints each case's
p50/p99 and syncs per second. Run from a directory on the store's disk:

    cd target && python3 ../bench/fsync_pair.py
"""
import os
import statistics
import threading
import time

N = 1500
BLOCK = b"x" * 4096


def run(path, out, in_place):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if in_place:
            os.write(fd, b"\0" * (len(BLOCK) * N))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        waits = []
        for _ in range(N):
            start = time.perf_counter()
            os.write(fd, BLOCK)
            os.fdatasync(fd)
            waits.append(time.perf_counter() - start)
        out.append(waits)
    finally:
        os.close(fd)
        os.unlink(path)


def shown(waits):
    ordered = sorted(waits)
    return f"{statistics.median(ordered) * 1e6:.0f}/{ordered[int(len(ordered) * 0.99)] * 1e6:.0f} us"


for in_place in (False, True):
    alone, pair = [], []
    t0 = time.perf_counter()
    run("fsync-a.log", alone, in_place)
    t1 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(p, pair, in_place)) for p in ("fsync-a.log", "fsync-b.log")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t2 = time.perf_counter()
    print(
        f"{'in place' if in_place else 'append  '}: one file alone p50/p99 {shown(alone[0])}, {N / (t1 - t0):.0f} syncs/s; "
        f"two at once {shown(pair[0])} and {shown(pair[1])}, {2 * N / (t2 - t1):.0f} syncs/s together"
    )
