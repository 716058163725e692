"""What puts chat requests on the bus: the client SDK, and the OpenAI-compatible gateway with
its web UI."""
