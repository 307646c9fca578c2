"""VDSM hook points for SR-IOV live migration (thin entry points)."""
