"""jobsvc: a PostgreSQL-backed job queue service for image-ingest jobs."""

__version__ = "0.1.0"
