"""Change data capture: move rows of the ``cdc.change`` outbox to a STOMP broker."""
