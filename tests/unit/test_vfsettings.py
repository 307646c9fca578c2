"""VF settings: how our record carries them, what a plug changes, how netlink's answer reads."""

from __future__ import annotations

import pytest

from sriov_host import netlink, vfsettings
from sriov_host.vfsettings import VfSettings

FULL = "spoofchk=off,trust=on,link_state=disable,min_tx_rate=10,max_tx_rate=300,query_rss=on"


def test_text_should_round_trip():
    parsed = vfsettings.from_text(FULL)

    assert parsed == VfSettings(False, True, "disable", 10, 300, True)
    assert parsed.to_text() == FULL
    assert vfsettings.from_text(None) == VfSettings() and VfSettings().to_text() == ""


@pytest.mark.parametrize("text, named", [
    ("spoofchk=maybe", "spoofchk"),
    ("max_tx_rate=-3", "max_tx_rate"),
    ("link_state=up", "link_state"),
    ("mtu=9000", "mtu"),
    ("trust", "trust"),
])
def test_bad_text_should_name_the_bad_setting(text, named):
    with pytest.raises(ValueError, match=named):
        vfsettings.from_text(text)


def test_change_should_hold_only_what_differs_and_set_both_rates_together():
    wanted = vfsettings.from_text(FULL)
    current = vfsettings.from_text("spoofchk=off,trust=off,link_state=disable,min_tx_rate=0,"
                                   "max_tx_rate=300,query_rss=off")

    assert vfsettings.to_change(wanted, current) == [("trust", True), ("query_rss", True),
                                                     ("rate", (10, 300))]
    assert vfsettings.to_change(wanted, wanted) == []
    assert len(vfsettings.to_change(wanted, None)) == 5  # unknown: set all (rates as one)


def test_mismatches_should_skip_refused_and_unknown():
    wanted = vfsettings.from_text(FULL)
    seen = vfsettings.from_text("spoofchk=on,trust=on,link_state=auto")

    assert vfsettings.mismatches(wanted, seen) == ["spoofchk", "link_state"]
    assert vfsettings.mismatches(wanted, seen, skip={"link_state"}) == ["spoofchk"]
    assert vfsettings.mismatches(wanted, None) == []


class Nla(dict):
    """An IFLA_VF_INFO as pyroute2 hands it over: attributes by name, each a dict of fields."""

    def get_attr(self, name):
        return self.get(name)


def test_netlink_vf_info_should_read_every_setting_and_leave_unsent_ones_unknown():
    info = Nla(IFLA_VF_SPOOFCHK={"vf": 0, "spoofchk": 0}, IFLA_VF_TRUST={"vf": 0, "trust": 1},
               IFLA_VF_LINK_STATE={"vf": 0, "link_state": 2},
               IFLA_VF_RATE={"vf": 0, "min_tx_rate": 0, "max_tx_rate": 300},
               IFLA_VF_RSS_QUERY_EN={"vf": 0, "rss_query_en": 4294967295})

    got = netlink.settings_from_vf_info(info)

    assert got == VfSettings(spoofchk=False, trust=True, link_state="disable", min_tx_rate=0,
                             max_tx_rate=300, query_rss=None)


def test_vf_index_should_follow_the_pfs_virtfn_links(tmp_path):
    dev = tmp_path / "devices" / "0000:01:00.0"
    dev.mkdir(parents=True)
    for n, addr in enumerate(("0000:01:10.0", "0000:01:10.2")):
        (tmp_path / "devices" / addr).mkdir()
        (dev / ("virtfn%d" % n)).symlink_to(tmp_path / "devices" / addr)
    (tmp_path / "class" / "net" / "enp1s0").mkdir(parents=True)
    (tmp_path / "class" / "net" / "enp1s0" / "device").symlink_to(dev)

    assert netlink.vf_index("enp1s0", "0000:01:10.2", sysfs=str(tmp_path)) == 1
    assert netlink.vf_index("enp1s0", "0000:02:10.0", sysfs=str(tmp_path)) is None
    assert netlink.vf_index("enp9s0", "0000:01:10.2", sysfs=str(tmp_path)) is None
