"""The spec agrees with setup.cfg; these need no rpmbuild."""

from __future__ import annotations

import re

import rpm_packaging as rp


def _spec() -> str:
    with open(rp.SPEC, encoding="utf-8") as f:
        return f.read()


def _install_list(option: str) -> set:
    """The names after ``--packages``/``--scripts`` in the spec's %install."""
    match = re.search(r"%s ([^\\\n]+)" % re.escape(option), _spec())
    assert match, "no %s in the spec's %%install" % option
    return set(match.group(1).split())


def test_spec_version_should_match_setup_cfg():
    assert rp.spec_tag("Version") == rp.setup_cfg().get("metadata", "version")


def test_spec_should_install_every_console_script_but_the_lab_and_the_installer():
    packaged = set(rp.MAIN_SCRIPTS + rp.ENGINE_SCRIPTS)
    assert _install_list("--scripts") == packaged
    assert set(rp.console_scripts()) == packaged | set(rp.NOT_PACKAGED_SCRIPTS)


def test_spec_should_install_the_host_packages_and_the_adapter_only():
    assert _install_list("--packages") == set(rp.MAIN_PACKAGES + rp.ENGINE_PACKAGES)
    entry_packages = {target.split(".")[0] for target in rp.console_scripts().values()}
    assert entry_packages - _install_list("--packages") == {"sriov_lab"}


def test_spec_fallbacks_should_give_way_to_el9_macros():
    """Each fallback is defined only where the macro is not (Debian's rpmbuild)."""
    spec = _spec()
    for macro in ("python3", "python3_sitelib", "_unitdir"):
        assert re.search(r"^%%\{!\?%s: %%global %s " % (macro, macro), spec, re.MULTILINE), macro
    for macro in ("systemd_post", "systemd_preun", "systemd_postun_with_restart"):
        assert re.search(r"^%%if 0%%\{!\?%s:1\}\n%%define %s\(\) " % (macro, macro), spec,
                         re.MULTILINE), macro
