# SPDX-License-Identifier: Apache-2.0
"""A processor that counts deliveries, for at-least-once checks."""

import threading
import time


class Recorder:
    """A processor that counts every delivery of each message id."""

    def __init__(self):
        self.counts = {}
        self.times = []
        self._lock = threading.Condition()

    def __call__(self, message):
        with self._lock:
            self.counts[message['id']] = self.counts.get(message['id'], 0) + 1
            self.times.append(time.monotonic())
            self._lock.notify_all()

    def wait_for_ids(self, ids, timeout):
        with self._lock:
            return self._lock.wait_for(lambda: ids <= self.counts.keys(), timeout)

    def longest_pause(self):
        """The longest time between two processed messages, in seconds."""
        times = sorted(self.times)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)
