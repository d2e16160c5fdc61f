"""Settings of the assignment benchmark's gunicorn: the production settings module with
the benchmark URLconf, which mounts the anchor endpoint next to the real API."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.assignment_urls"
