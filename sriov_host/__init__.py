"""Host-side model shared by the VDSM hooks and the per-host service.

Pure logic (domain XML, policy, allocation) lives in modules that do no
I/O; the I/O edges (libvirt, sqlite, netlink) are kept in their own
modules so most of the code can be tested without a daemon.
"""

__version__ = "0.1.0"
