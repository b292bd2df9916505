"""Reconcile (issue 6, DESIGN 7): prove card by card that every system agrees, repair what is safe."""

from app.sync.reconcile.runner import (
    DEACTIVATE_SHADOW_JOB,
    PERIODIC_NAME,
    Progress,
    Reconciler,
    execute_here,
    schedule_run,
)

__all__ = [
    "DEACTIVATE_SHADOW_JOB",
    "PERIODIC_NAME",
    "Progress",
    "Reconciler",
    "execute_here",
    "schedule_run",
]
