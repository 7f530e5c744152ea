"""MAC vendor lookup: the real ieee-data files when installed, fixture files for damaged data."""
import io
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from netwatchd.devices.vendors import VendorDb, is_multicast, is_randomized, parse_registry_rows
from tests.conftest import requires

IEEE_DIR = "/usr/share/ieee-data"
FIXTURES = Path(__file__).parent / "fixtures" / "ieee"


@pytest.fixture(scope="module")
def real_db():
    requires(os.path.isdir(IEEE_DIR), f"needs the ieee-data package ({IEEE_DIR})")
    return VendorDb.load(IEEE_DIR)


def fixture_lookups():
    """(mac, expected vendor) pairs from fixtures/ieee/lookups.txt."""
    pairs = []
    for line in (FIXTURES / "lookups.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            mac, _, vendor = line.partition("\t")
            pairs.append((mac, vendor))
    return pairs


# --- the real registry files -------------------------------------------------------------------

@pytest.mark.parametrize(
    "mac, vendor",
    [
        ("00:00:0c:12:34:56", "Cisco Systems, Inc"),  # MA-L
        ("3c:22:fb:01:02:03", "Apple, Inc."),  # MA-L
        ("00:1b:63:00:00:01", "Apple, Inc."),  # MA-L
        # MA-M 20:85:93:B inside the MA-L 20:85:93 of the IEEE Registration Authority
        ("20:85:93:b1:23:45", "IOG Products LLC"),
        ("20:85:93:01:23:45", "Hemina Spa"),  # its neighbour 20:85:93:0
        ("20:85:93:f1:23:45", "IEEE Registration Authority"),  # 20:85:93:F is not assigned
        # MA-S 70:B3:D5:F2:F inside the MA-L 70:B3:D5 of the IEEE Registration Authority
        ("70:b3:d5:f2:f1:23", "TELEPLATFORMS"),
        ("70:b3:d5:f2:e1:23", "Shanghai JCY Technology Company"),  # its neighbour
        # IAB 00:50:C2:7D:5, also 36 bits
        ("00:50:c2:7d:51:23", "DEUTA-WERKE GmbH"),
        ("74:1a:e0:91:23:45", "Private"),  # an MA-M registered privately: as the file says
        ("00:00:00:00:00:00", "XEROX CORPORATION"),
    ],
)
def test_real_files_longest_prefix_wins(real_db, mac, vendor):
    assert real_db.lookup(mac) == vendor


def test_real_files_other_spellings(real_db):
    for spelling in ("00-00-0C-12-34-56", "0000.0c12.3456", "00000C123456", "00:00:0C:12:34:56"):
        assert real_db.lookup(spelling) == "Cisco Systems, Inc"


def test_real_files_all_loaded(real_db):
    report = real_db.report
    assert not report.missing and not report.skipped
    # Debian 12's ieee-data (2022): 32.5k MA-L, 4.4k MA-M, 5k MA-S, 4.6k IAB
    assert report.entries["oui.csv"] > 30000
    assert min(report.entries.values()) > 4000
    assert len(real_db) == sum(report.entries.values())


@pytest.mark.parametrize("second_nibble", "26ae")
def test_randomized_macs_have_no_vendor(real_db, second_nibble):
    # 3c:22:fb is Apple's; with the locally administered bit set it is made up, not Apple's.
    mac = f"3{second_nibble}:22:fb:01:02:03"
    assert is_randomized(mac)
    assert real_db.lookup(mac) == ""


def test_unknown_prefix(real_db):
    # No IEEE block starts with an odd first octet (the group bit): nothing to find.
    assert real_db.lookup("01:00:5e:00:00:fb") == ""


def test_load_time(real_db):
    """Loading happens at daemon start: it must be quick (measured ~0.05 s here)."""
    start = time.perf_counter()
    VendorDb.load(IEEE_DIR)
    assert time.perf_counter() - start < 0.3 * 3  # headroom for a loaded shared machine


# --- bits --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "mac, randomized, multicast",
    [
        ("3c:22:fb:01:02:03", False, False),
        ("3e:22:fb:01:02:03", True, False),
        ("da:a1:19:00:00:01", True, False),
        ("01:00:5e:00:00:fb", False, True),
        ("33:33:00:00:00:01", True, True),  # IPv6 multicast: both bits
        ("ff:ff:ff:ff:ff:ff", True, True),
        ("3E-22-FB-01-02-03", True, False),
    ],
)
def test_address_bits(mac, randomized, multicast):
    assert is_randomized(mac) is randomized
    assert is_multicast(mac) is multicast


@pytest.mark.parametrize("bad", ["", "00:00:0c:12:34", "00:00:0c:12:34:5g", "zz:zz:zz:zz:zz:zz", "hello"])
def test_not_a_mac_is_an_error(bad):
    with pytest.raises(ValueError):
        VendorDb().lookup(bad)
    with pytest.raises(ValueError):
        is_randomized(bad)


# --- fixture files: malformed rows, a missing file, a missing directory -------------------------

@pytest.mark.parametrize("mac, vendor", fixture_lookups())
def test_fixture_lookups(mac, vendor):
    assert VendorDb.load(str(FIXTURES)).lookup(mac) == vendor


def test_fixture_malformed_rows_counted_missing_file_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="netwatchd.devices.vendors"):
        db = VendorDb.load(str(FIXTURES))
    report = db.report
    assert report.entries == {"oui.csv": 5, "mam.csv": 2, "oui36.csv": 1}
    assert report.skipped == {"oui.csv": 4, "mam.csv": 1, "oui36.csv": 1}
    assert report.missing == [str(FIXTURES / "iab.csv")]
    text = caplog.text
    assert str(FIXTURES / "iab.csv") in text
    assert f"{FIXTURES / 'oui.csv'}: skipped 4 malformed row(s)" in text


def test_missing_directory_gives_empty_db_and_a_warning(tmp_path, caplog):
    missing = tmp_path / "no-such-dir"
    with caplog.at_level(logging.WARNING, logger="netwatchd.devices.vendors"):
        db = VendorDb.load(str(missing))
    assert len(db) == 0 and db.report.missing == [str(missing)]
    assert str(missing) in caplog.text and "ieee-data" in caplog.text
    assert db.lookup("00:00:0c:12:34:56") == ""


def test_unreadable_file_is_like_a_missing_one(tmp_path, caplog):
    shutil.copy(FIXTURES / "oui.csv", tmp_path / "oui.csv")
    (tmp_path / "mam.csv").mkdir()  # exists, but cannot be read as a file
    with caplog.at_level(logging.WARNING, logger="netwatchd.devices.vendors"):
        db = VendorDb.load(str(tmp_path))
    assert str(tmp_path / "mam.csv") in db.report.missing
    assert str(tmp_path / "mam.csv") in caplog.text
    assert db.lookup("00:00:0c:00:00:01") == "Cisco Systems, Inc"


def test_oversized_field_and_bad_bytes_skip_one_row(tmp_path):
    # csv refuses fields over its size limit with an error; the rows after it must still load.
    (tmp_path / "oui.csv").write_bytes(
        b"MA-L,001155,Big," + b"x" * 200_000 + b"\r\n"
        b"MA-L,001166,After Big,addr\r\n"
        b"MA-L,001177,Bad \xff Byte,addr\r\n"
    )
    db = VendorDb.load(str(tmp_path))
    assert db.report.skipped == {"oui.csv": 1}
    assert db.lookup("00:11:66:00:00:01") == "After Big"
    assert db.lookup("00:11:77:00:00:01") == "Bad \ufffd Byte"


def test_parse_interns_repeated_names():
    names = {}
    rows = "MA-L,000001,Same Corp,a\nMA-L,000002,Same Corp,b\n"
    table, skipped, duplicates = parse_registry_rows(io.StringIO(rows), 24, names)
    assert (skipped, duplicates) == (0, 0)
    assert table[1] is table[2]
