"""Render DHCP server configuration from the machine database, on every relevant change."""
