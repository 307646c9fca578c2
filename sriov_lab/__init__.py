"""The two-host lab: real libvirtd instances and a tiny real guest on one machine.

There is no SR-IOV hardware here; the lab stands VFs in with nodedev XML
inventories and the ``emulated`` VF mode (see DESIGN.md).
"""
