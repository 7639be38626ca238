"""Tries what a Python plugin must not do, and says what happened: for tests of the sandbox.

On `sandbox-py/try/<what>` it attempts <what> and publishes the outcome to
`sandbox-py/result/<what>` as `{"allowed": bool, "detail": "..."}`:
- `open`: read /etc/passwd, then write a file in the current directory;
- `socket`: connect a TCP socket to 127.0.0.1:1883 (the broker port of a usual gateway);
- `environ`: the environment the plugin sees (its variables' names);
- `subprocess`: start a shell.
"""
import json
import os

import edgewise_plugin as edgewise


def attempt(what):
    if what == "open":
        with open("/etc/passwd") as f:
            first = f.readline()
        with open("planted.txt", "w") as f:
            f.write("x")
        return f"read {first!r} and wrote planted.txt"
    if what == "socket":
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", 1883))
        return "connected"
    if what == "environ":
        return sorted(os.environ)
    if what == "subprocess":
        import subprocess
        return subprocess.run(["sh", "-c", "id"], capture_output=True).stdout.decode()
    raise ValueError(f"unknown attempt {what}")


class Sandbox(edgewise.Plugin):
    def on_message(self, msg):
        what = msg.topic.rsplit("/", 1)[-1]
        try:
            result = {"allowed": True, "detail": attempt(what)}
        except Exception as e:
            result = {"allowed": False, "detail": f"{type(e).__name__}: {e}"}
        edgewise.publish(f"sandbox-py/result/{what}", json.dumps(result))


Handler = edgewise.handler(Sandbox)
