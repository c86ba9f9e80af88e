"""Orchestrator: owns the job state machine; admits, dispatches and finishes jobs."""
