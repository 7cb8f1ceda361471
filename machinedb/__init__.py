"""Runtime pieces shared by the relay (cdc) and the generator: configuration parsing,
daemon plumbing and logging. Nothing here knows about DHCP or the outbox."""
