"""How chatbus's real services are installed, started and deployed (local services, topics, k8s)."""
