# Hostile: open files until something breaks.
files = []
try:
    for i in range(100_000):
        files.append(open(f"f{i}", "w"))
    print("opened", len(files))
except OSError as e:
    print("stopped", type(e).__name__, "after", len(files))
