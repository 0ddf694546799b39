# Hostile: allocate and touch 4 GB.
block = bytearray(4 << 30)
print("allocated", len(block))
