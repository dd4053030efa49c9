"""Maintenance services: periodic work on the queue as a whole, each its own small unit
with its own settings (River's model). Today the rescuer; a cleaner will join it.

Each service has ``run()`` (forever, cancellable, survives database outages) and
``run_once()`` (one pass, for tests and tools), and is started by the worker.
"""

from jobsvc.maintenance.rescuer import Rescuer, RescuerConfig

__all__ = ["Rescuer", "RescuerConfig"]
