"""The local stack: real Kafka, ClickHouse (chDB), Triton, Prometheus and Alertmanager."""
