# Hostile: overwrite, delete and add files next to a host marker file (path on stdin).
import os

marker = input()
for name, action in [
    ("overwrite", lambda: open(marker, "w").write("pwned")),
    ("delete", lambda: os.remove(marker)),
    ("create", lambda: open(os.path.join(os.path.dirname(marker), "new_file"), "w").write("pwned")),
]:
    try:
        action()
        print(name, "done")
    except OSError as e:
        print(name, "blocked", type(e).__name__)
