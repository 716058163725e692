"""``chatbus ops``: what an SRE runs — topics, consumer-group lag, component status, scaling and
draining the local supervisor's replicas."""
