"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny convs run faster on one thread, and far faster when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def postgres():
    """A live PostgreSQL server for the session (tests/pg_server.py); never skipped when missing."""
    from tests.pg_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh, empty database on the live server (so a fresh Optuna schema): its psycopg (3) URL."""
    return postgres.database()
