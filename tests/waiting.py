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


def cancel_after(gen, n_checkpoints: int, holder: dict):
    """Pass the events of ``gen`` through; cancel ``holder["job"]`` at the n-th checkpoint event."""
    seen = 0
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if "checkpoint" in ev.metrics:
            seen += 1
            if seen == n_checkpoints:
                holder["job"].cancel()
        yield ev
