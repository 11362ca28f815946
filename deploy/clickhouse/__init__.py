"""Embedded ClickHouse: chDB (the real engine, in-process) behind ClickHouse's HTTP interface.

chDB allows one engine per process and one process per data folder, so one server
process owns the engine and every other Flywheel process talks to it over HTTP with
the same client it would use against a real ClickHouse server (`client.get_client`).
"""
