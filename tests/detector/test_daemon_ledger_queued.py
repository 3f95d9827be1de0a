"""QueuedRows: a producer's queued records are bounded, not only its queued items."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from detector.daemon.ledger import QueuedRows


def test_counts_what_is_still_queued():
    q: queue.Queue = queue.Queue()
    b = QueuedRows(100)
    assert b.put(q, "a", 30) and b.put(q, "b", 50)
    assert b.queued(q) == 80
    q.get()  # the consumer took the oldest
    assert b.queued(q) == 50
    q.get()
    assert b.queued(q) == 0 and b.waits == 0


def test_waits_for_room_then_puts():
    q: queue.Queue = queue.Queue(maxsize=10)
    b = QueuedRows(100, poll=0.001)
    b.put(q, "a", 80)
    taken = []

    def consumer():
        time.sleep(0.2)
        taken.append(q.get())

    th = threading.Thread(target=consumer)
    th.start()
    t0 = time.monotonic()
    assert b.put(q, "b", 40)  # 80 + 40 > 100: waits until "a" is taken
    waited = time.monotonic() - t0
    th.join()
    assert taken == ["a"] and waited >= 0.15 and b.waits == 1
    assert q.get_nowait() == "b" and b.queued(q) == 0


def test_an_item_bigger_than_the_bound_goes_into_an_empty_queue():
    q: queue.Queue = queue.Queue()
    b = QueuedRows(10)
    assert b.put(q, "big", 1000)
    assert q.qsize() == 1 and b.waits == 0


def test_stop_ends_the_wait():
    q: queue.Queue = queue.Queue(maxsize=1)
    b = QueuedRows(10, poll=0.001)
    b.put(q, "a", 10)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert b.put(q, "b", 5, stop.is_set) is False  # room never came, then the queue stayed full: given up
    assert q.qsize() == 1
    # give_up=False: the records no longer hold it back, a free slot does
    threading.Timer(0.1, q.get).start()
    assert b.put(q, "c", 5, stop.is_set, give_up=False)
    assert q.get_nowait() == "c"


@pytest.mark.parametrize("bad", [0, -5])
def test_bound_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        QueuedRows(bad)
