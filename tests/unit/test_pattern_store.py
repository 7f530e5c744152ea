"""Known patterns on disk: what the kernel reported comes back newest-capacity-first after a
restart, in the order the LRU should get them, and a damaged file costs only the patterns."""
import logging
import os

from netwatchd.store.patterns import PATTERNS_FILE, Pattern, PatternStore, open_patterns

MAC = "00:00:0c:00:00:01"


def test_patterns_round_trip_oldest_first_bounded_to_the_newest(tmp_path):
    path = str(tmp_path / PATTERNS_FILE)
    store = PatternStore.open(path, capacity=3)
    for n, (addr, port, transport) in enumerate([("10.0.0.1", 80, "tcp"), ("fd00::1", 53, "udp"),
                                                  ("10.0.0.2", 443, "tcp"), ("10.0.0.3", 22, "tcp")]):
        store.seen(MAC, addr, port, transport, "", when_usec=100 + n)
    store.seen(MAC, "10.0.0.9", 0, "weird", "")  # not a transport the kernel keys by: ignored
    assert store.newest(10) == []  # nothing written before a flush
    store.flush()
    store.seen(MAC, "fd00::1", 53, "udp", "", when_usec=200)  # re-reported later (LRU evicted it): newest now
    store.close()
    again = PatternStore.open(path, capacity=3)
    assert again.newest(10) == [Pattern(MAC, "10.0.0.2", 443, 6), Pattern(MAC, "10.0.0.3", 22, 6),
                                Pattern(MAC, "fd00::1", 53, 17)]
    assert again.newest(1) == [Pattern(MAC, "fd00::1", 53, 17)]
    assert Pattern(MAC, "10.0.0.2", 443, 6).address_bytes() == bytes([10, 0, 0, 2]) + bytes(12)
    assert (Pattern(MAC, "10.0.0.2", 443, 6).family, Pattern(MAC, "fd00::1", 53, 17).family) == (2, 10)
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    again.close()


def test_a_damaged_file_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / PATTERNS_FILE
    path.write_bytes(b"this is not sqlite at all" * 10)
    with caplog.at_level(logging.ERROR):
        store = open_patterns(str(tmp_path), 10)
    assert store is not None and store.newest(10) == []
    kept = [p for p in os.listdir(tmp_path) if p.startswith(PATTERNS_FILE + ".corrupt-")]
    assert len(kept) == 1 and (tmp_path / kept[0]).read_bytes().startswith(b"this is not sqlite")
    assert "unusable" in caplog.text
    store.close()
