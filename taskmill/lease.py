"""The old import path of the lease keeper, now :mod:`taskmill.scheduler.leases`."""

from .scheduler.leases import FENCE_FRACTION, Heartbeat, LeaseKeeper, renew_interval

__all__ = ["FENCE_FRACTION", "Heartbeat", "LeaseKeeper", "renew_interval"]
