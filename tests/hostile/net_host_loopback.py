# Hostile: reach a server the test runs on the host's 127.0.0.1 (port on stdin).
import socket

port = int(input())
try:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"pwned")
    print("connected")
except OSError as e:
    print("blocked", type(e).__name__)
