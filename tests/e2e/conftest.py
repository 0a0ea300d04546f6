"""One real server process per test module, over a fresh database of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.module_pair import ModulePair, running_module_pair
from tests.e2e.servers import ServerProcess, start_server


@pytest.fixture(scope="module")
def server(
    create_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`python -m server` on a free port, ready (health SERVING), stopped with SIGTERM after."""
    process = start_server("server", create_database(), tmp_path_factory.mktemp("e2e-logs"))
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.stop()
        assert code == 0, f"server exit code {code}:\n{process.log[-4000:]}"


@pytest.fixture(scope="module")
def module_pair(
    create_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModulePair]:
    """The server and the sandbox payment module, each a process over its own database."""
    with running_module_pair(
        create_database(), create_database(), tmp_path_factory.mktemp("module-e2e")
    ) as pair:
        yield pair
