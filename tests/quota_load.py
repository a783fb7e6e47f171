"""Processes for the multi-process quota tests, with the settings in the environment.

`python -m tests.quota_load spend INDEX SECONDS`: spend quota as fast as it is granted,
for a user the even-numbered processes share (so that user's budget binds), or for two
users of its own (odd: so the project's budget binds). Prints one JSON line per
granted reservation: [send time, user id, units].

`python -m tests.quota_load hold USER PARTS TTL`: take permits, say so, and never give
them back (the test kills it).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

HOT_USER = 1
UNITS = (5, 5, 5, 20, 20, 100)


def spend(index: int, seconds: float) -> None:
    from mailsync import quota

    users = [HOT_USER] if index % 2 == 0 else [100 + 2 * index, 101 + 2 * index]
    print("ready", flush=True)
    sys.stdin.readline()  # every process starts at once
    end = time.monotonic() + seconds
    sent = []
    while time.monotonic() < end:
        user = random.choice(users)
        units = random.choice(UNITS)
        if quota.reserve(user, units, max_wait=10).granted:
            sent.append((time.time(), user, units))
    for event in sent:
        print(json.dumps(event))


def hold(user: int, parts: int, ttl_s: float) -> None:
    from mailsync import quota

    quota.acquire_permits(user, parts, max_wait=10, ttl_s=ttl_s)
    print("held", flush=True)
    time.sleep(3600)


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    if sys.argv[1] == "spend":
        spend(int(sys.argv[2]), float(sys.argv[3]))
    else:
        hold(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))


if __name__ == "__main__":
    main()
