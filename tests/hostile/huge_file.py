# Hostile: write a 1 GB file in the working directory.
written = 0
try:
    with open("huge.bin", "wb") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(1024):
            f.write(chunk)
            f.flush()
            written += len(chunk)
    print("wrote", written)
except OSError as e:
    print("stopped", type(e).__name__, "after", written)
