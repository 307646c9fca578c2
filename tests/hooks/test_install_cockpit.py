"""``sriov-migration-install --cockpit``: the page where Cockpit looks; ``--uninstall`` removes it."""

from __future__ import annotations

import json

from vdsm_hooks import cockpit_page, install


def _run(tmp_path, *extra):
    assert install.main(["--root", str(tmp_path), "--hooks-only", *extra]) == 0


def test_install_cockpit_should_put_the_page_where_cockpit_looks_and_be_idempotent(tmp_path, capsys):
    _run(tmp_path, "--cockpit")
    page = tmp_path / cockpit_page.COCKPIT_DIR.lstrip("/")
    manifest = json.loads((page / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "SR-IOV migration"
    html = (page / "index.html").read_text()
    assert '<script src="../base1/cockpit.js"></script>' in html and "<script>" not in html  # CSP: no inline
    assert (page / "sriov.js").stat().st_mode & 0o777 == 0o644
    capsys.readouterr()
    _run(tmp_path, "--cockpit")
    second = capsys.readouterr().out
    assert "installed" not in second and "unchanged %s" % (page / "sriov.js") in second


def test_install_without_cockpit_should_not_touch_cockpit(tmp_path):
    _run(tmp_path)
    assert not (tmp_path / "usr/share/cockpit").exists()


def test_uninstall_should_remove_the_page_but_keep_an_edited_file(tmp_path, capsys):
    _run(tmp_path, "--cockpit")
    page = tmp_path / cockpit_page.COCKPIT_DIR.lstrip("/")
    (page / "style.css").write_text("/* mine */\n")
    _run(tmp_path, "--uninstall")
    out = capsys.readouterr().out
    assert sorted(p.name for p in page.iterdir()) == ["style.css"]
    assert "kept %s: it was edited" % (page / "style.css") in out
    (page / "style.css").unlink()
    _run(tmp_path, "--cockpit")
    _run(tmp_path, "--uninstall")
    assert not page.exists()
