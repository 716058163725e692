"""Local services of chatbus: Kafka (KRaft), Redis, FerretDB (MongoDB API) and S3 (moto).

``up`` / ``down`` / ``status`` manage them; ``process`` runs any background process with a PID
file and a log file under ``settings.state_dir``. Try it with ``python -m infra.local up``.
"""

from infra.local.manager import SERVICES, down, status, up
from infra.local.service import ServiceStatus

__all__ = ["SERVICES", "ServiceStatus", "down", "status", "up"]
