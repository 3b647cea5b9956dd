"""Polling helper for tests of background work (jobs, widgets)."""
import time


def wait_until(cond, timeout: float = 30.0) -> bool:
    """Poll ``cond()`` every 20 ms until it is true (True) or ``timeout`` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False
