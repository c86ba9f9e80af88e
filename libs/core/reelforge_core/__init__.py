"""Shared plumbing for every Reelforge service: settings, logs, telemetry, Postgres, outbox, Kafka, gRPC."""
