# Hostile: leave a daemon behind (setsid + double fork) that touches a marker after 2 s.
# stdin: marker path, then a token the daemon carries in its command line so the test can look for it.
import os
import sys

marker, token = input(), input()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        code = f"import time; time.sleep(2); open({marker!r}, 'w').write('alive')  # {token}"
        os.execv(sys.executable, [sys.executable, "-c", code])
    os._exit(0)
os.wait()
print("daemon started")
