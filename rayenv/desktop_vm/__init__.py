"""The VM desktop: desktop-lite's desktop as a QEMU guest, in a container shaped like OSWorld's (see build)."""
