"""The lab's VDSM stand-in, laid out after the VDSM modules it copies.

VDSM cannot run here, so these modules copy its order, answers and
refusals (each names the VDSM file and function it copies):

* :mod:`.api`: ``API.py``/``clientIF.py``: the JSON-RPC verbs and the VM container;
* :mod:`.incoming`: ``API.py migrationCreate``, ``vm.py _completeIncomingMigration``: the destination;
* :mod:`.vm`: ``virt/vm.py``: ``hotplugNic``/``hotunplugNic``;
* :mod:`.devicebooks`: ``virt/vm.py``: the device list, the descriptor, ``onDeviceRemoved``;
* :mod:`.events`: ``clientIF.py dispatchLibvirtEvents``: the libvirt events VDSM acts on;
* :mod:`.migration`: ``virt/migration.py``: the source thread and its timed result;
* :mod:`.hostdevices`: ``vm.py Vm.__init__``, ``vmdevices/hostdevice.py``: ``migrationCreate``'s devices;
* :mod:`.hooks`: ``common/hooks.py``: ``_runHooksDir``;
* :mod:`.define`: ``common/define.py``, ``exception.py``, ``config.py.in``: codes and defaults.
"""
