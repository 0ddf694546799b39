# Hostile, but bounded even without a sandbox: at most 200 children, each sleeping 2 s, none forking.
import os
import time

forked, error = 0, "none"
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        error = type(e).__name__
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    forked += 1
print("forked", forked, "error", error)
