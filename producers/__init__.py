"""What puts chat requests on the bus: the client SDK (and, later, the gateway and web UI)."""
