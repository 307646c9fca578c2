"""SASL on each lab libvirtd, as VDSM sets it up on an oVirt host.

VDSM's ``lib/vdsm/tool/configurators/libvirt.py`` puts
``auth_unix_rw = "sasl"`` in libvirtd.conf (and leaves ``auth_unix_ro``
at libvirt's default). Its ``tool/configurators/passwd.py`` writes
``/etc/sasl2/libvirt.conf`` (``mech_list: scram-sha-256``, ``sasldb_path:
/etc/libvirt/passwd.db``) and adds ``vdsm@ovirt`` with ``saslpasswd2 -p
-a libvirt``, the password on stdin, read from
``/etc/pki/vdsm/keys/libvirt_password`` (``common/libvirtconnection.py``).

A lab host gets the same, in its own directories: ``<root>/sasl2`` is
bind-mounted over ``/etc/sasl2`` in its mount namespace (see
:mod:`sriov_lab.hosts`), its database is ``<root>/etc/passwd.db``
(``/etc/libvirt/passwd.db`` inside), and its password, random per host,
is in ``<root>/libvirt_password`` (mode 0600). So every client of a lab
libvirtd must authenticate: the hooks and the service through the
project's own path (``[libvirt] username, password_file``), the lab's
own admin actions through :func:`open_admin`, and ``virsh`` through the
client auth file :func:`auth_file_path` (``LIBVIRT_AUTH_FILE``).
"""

from __future__ import annotations

import os
import secrets
import subprocess

from .errors import LabError

USERNAME = "vdsm@ovirt"  # VDSM's SASL_USERNAME (common/libvirtconnection.py)
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
SASLDB_INSIDE = "/etc/libvirt/passwd.db"  # passwd.py's _LIBVIRT_SASLDB, as the daemon sees it
# passwd.py's configure_libvirt_sasl writes exactly these two settings.
SASL2_CONF = "mech_list: scram-sha-256\nsasldb_path: %s\n" % SASLDB_INSIDE
# libvirt's client auth file (https://libvirt.org/auth.html); a unix
# socket URI has no host name, so libvirt looks the credentials up as localhost.
AUTH_CONF = """\
[credentials-vdsm]
authname = {user}
password = {password}

[auth-libvirt-localhost]
credentials = vdsm
"""


def password_path(root: str) -> str:
    """The host's ``libvirt_password`` (VDSM's ``/etc/pki/vdsm/keys/libvirt_password``)."""
    return os.path.join(root, "libvirt_password")


def auth_file_path(root: str) -> str:
    """The host's libvirt client auth file, for ``LIBVIRT_AUTH_FILE=... virsh -c URI``."""
    return os.path.join(root, "auth.conf")


def configure(root: str) -> None:
    """Write the host's sasl2 config, password file, SASL database and auth file.

    *root* is the host's directory; ``<root>/etc`` is its /etc/libvirt copy.
    """
    if not os.path.isdir("/etc/sasl2"):  # the mount point of the host's sasl2 dir
        raise LabError("the lab needs /etc/sasl2 (apt-get install libvirt-daemon-system)")
    sasl2 = os.path.join(root, "sasl2")
    os.makedirs(sasl2, exist_ok=True)
    with open(os.path.join(sasl2, "libvirt.conf"), "w", encoding="utf-8") as f:
        f.write(SASL2_CONF)
    password = secrets.token_urlsafe(24)
    # A trailing newline, as an editor leaves one: readers take the first line.
    _write_private(password_path(root), password + "\n")
    _write_private(auth_file_path(root), AUTH_CONF.format(user=USERNAME, password=password))
    db = os.path.join(root, "etc", "passwd.db")
    if os.path.exists(db):  # copied from this machine's /etc/libvirt: not the host's users
        os.unlink(db)
    _saslpasswd2(sasl2, db, password)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _saslpasswd2(sasl2: str, db: str, password: str) -> None:
    """``saslpasswd2 -p -a libvirt`` as passwd.py runs it, on the host's own database."""
    if not os.access(SASLPASSWD2, os.X_OK):
        raise LabError("the lab needs %s (apt-get install sasl2-bin libsasl2-modules)"
                       % SASLPASSWD2)
    env = dict(os.environ, SASL_CONF_PATH=sasl2)  # the host's libvirt.conf, not /etc/sasl2's
    proc = subprocess.run([SASLPASSWD2, "-p", "-a", "libvirt", "-f", db, USERNAME],
                          input=password.encode(), env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise LabError("saslpasswd2 for %s failed (rc %d): %s"
                       % (db, proc.returncode, proc.stderr.decode(errors="replace").strip()))


def open_admin(uri: str, root: str):
    """A root admin connection to a lab libvirtd with the host's SASL credentials.

    Separate from the product's path (``sriov_host.libvirtconn``) on
    purpose: the lab's setup and cleanup must not depend on the code
    under test.
    """
    import libvirt

    with open(password_path(root), encoding="utf-8") as f:
        password = f.readline().rstrip("\n")
    answers = {libvirt.VIR_CRED_AUTHNAME: USERNAME, libvirt.VIR_CRED_PASSPHRASE: password}

    def request(creds, _opaque):
        for cred in creds:
            if cred[0] not in answers:
                return -1
            cred[4] = answers[cred[0]]
        return 0

    return libvirt.openAuth(uri, [list(answers), request, None], 0)
