"""A real cockpit-ws on loopback, a local user who logs into it, and headless Chromium.

cockpit-ws runs without systemd's socket activation: as root, ``--no-tls``
on 127.0.0.1 and a free port; it authenticates through PAM (cockpit-session)
like Debian 12's cockpit.socket would. The user is created for the tests with
a password and sudo rights (what Cockpit's administrative access uses), and
removed afterwards with its home. The page is installed by
``sriov-migration-install --cockpit`` under a scratch root and copied into the
user's ``~/.local/share/cockpit``, so nothing under /usr/share changes.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE = "sriov-migration"


def missing() -> str:
    """Why a browser test cannot run here, or ''."""
    if os.geteuid() != 0:
        return "needs root (a local user, cockpit-session)"
    for path in (COCKPIT_WS, CHROMEDRIVER, "/usr/bin/sudo"):
        if not os.path.exists(path):
            return "%s missing: run bash scripts/setup.sh" % path
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalUser:
    """A throw-away local user with a password; *sudo* gives it passwordless sudo."""

    def __init__(self, sudo: bool = True):
        self.name = "sriovck%s" % secrets.token_hex(3)
        self.password = secrets.token_urlsafe(12)
        self.sudoers = "/etc/sudoers.d/%s" % self.name
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", self.name], check=True)
        subprocess.run(["chpasswd"], input="%s:%s" % (self.name, self.password), text=True, check=True)
        if sudo:
            with open(self.sudoers, "w", encoding="utf-8") as f:
                f.write("%s ALL=(ALL) NOPASSWD: ALL\n" % self.name)
            os.chmod(self.sudoers, 0o440)
        self.home = pwd.getpwnam(self.name).pw_dir

    def install_page(self, scratch: str, config: dict) -> None:
        """The page through ``sriov-migration-install --cockpit``, then the page's config."""
        subprocess.run([sys.executable, "-m", "vdsm_hooks.install", "--cockpit", "--hooks-only",
                        "--root", scratch], check=True, stdout=subprocess.DEVNULL)
        dst = os.path.join(self.home, ".local/share/cockpit", PAGE)
        shutil.copytree(os.path.join(scratch, "usr/share/cockpit", PAGE), dst, dirs_exist_ok=True)
        conf = os.path.join(self.home, ".config/sriov-migration/cockpit.json")
        os.makedirs(os.path.dirname(conf), exist_ok=True)
        with open(conf, "w", encoding="utf-8") as f:
            json.dump(config, f)
        subprocess.run(["chown", "-R", "%s:" % self.name, self.home], check=True)

    def remove(self) -> None:
        if os.path.exists(self.sudoers):
            os.unlink(self.sudoers)
        # what its Cockpit sessions left (a session dbus-daemon): only this user's, by pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = subprocess.run(["pgrep", "-u", self.name], capture_output=True, text=True).stdout.split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        r = subprocess.run(["userdel", "-r", self.name], capture_output=True, text=True, check=False)
        if r.returncode not in (0, 12):  # 12: no mail spool to remove, the rest is gone
            raise RuntimeError("userdel %s: %s" % (self.name, r.stderr.strip()))


class CockpitWs:
    """cockpit-ws on 127.0.0.1:<free port>, stopped by its pid."""

    def __init__(self, log_path: str):
        self.port = free_port()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([COCKPIT_WS, "--no-tls", "--address", "127.0.0.1", "--port",
                                      str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("cockpit-ws did not listen on %d" % self.port) from None
                time.sleep(0.1)
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def login(driver, ws: CockpitWs, user: LocalUser, timeout: float = 30.0) -> None:
    """Log in through Cockpit's own login page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(ws.url + "/")
    wait = WebDriverWait(driver, timeout)
    wait.until(ec.visibility_of_element_located((By.ID, "login-user-input"))).send_keys(user.name)
    driver.find_element(By.ID, "login-password-input").send_keys(user.password)
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda d: "/system" in d.current_url or "/cockpit/" in d.current_url
               or d.find_elements(By.ID, "topnav"))


def open_page(driver, ws: CockpitWs) -> None:
    driver.get("%s/cockpit/@localhost/%s/index.html" % (ws.url, PAGE))


def administrative_access(driver) -> str:
    """Switch the session to administrative access, as the shell's toggle does; '' or the error."""
    return driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        cockpit.dbus(null, {bus: "internal"}).call("/superuser", "cockpit.Superuser", "Start", ["sudo"])
            .then(function () { done(""); }, function (e) { done(String(e.message || e)); });""")
