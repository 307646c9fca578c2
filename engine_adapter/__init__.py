"""The engine side: vNIC profile flags and checked migrations via ovirtsdk4."""
