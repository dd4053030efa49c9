"""Maintenance services: periodic work on the queue as a whole, each its own small unit
with its own settings (River's model): the rescuer (orphaned rows) and the cleaner
(retention).

Each service has ``run()`` (forever, cancellable, survives database outages) and
``run_once()`` (one pass, for tests and tools), and is started by the worker.
"""

from jobsvc.maintenance.cleaner import Cleaner, CleanerConfig
from jobsvc.maintenance.rescuer import Rescuer, RescuerConfig

__all__ = ["Cleaner", "CleanerConfig", "Rescuer", "RescuerConfig"]
