"""APScheduler's per-run INFO lines stay out of the log; its warnings do not."""

from __future__ import annotations

import io
import logging

from server.observability.logs import configure_logging


def test_the_schedulers_per_run_lines_are_quiet_and_its_warnings_show() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    try:
        scheduler = logging.getLogger("apscheduler.executors.default")
        scheduler.info('Running job "admission" (scheduled at ...)')
        scheduler.warning('Run time of job "admission" was missed by 0:00:02')
        logging.getLogger("server.jobs").info("admission ran")
    finally:
        configure_logging("WARNING", "text")
    written = stream.getvalue()
    assert "Running job" not in written
    assert "was missed" in written
    assert "admission ran" in written
