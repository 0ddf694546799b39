# Hostile: kill the parent, every process it can signal (kill -1), and list the processes it can see.
import os
import signal

for name, target in [("parent", os.getppid()), ("all", -1)]:
    try:
        os.kill(target, signal.SIGKILL)
        print(name, "sent")
    except OSError as e:
        print(name, "refused", type(e).__name__)
print("visible pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
