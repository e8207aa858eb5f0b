#!/usr/bin/env python3
"""Write the server's users file from the leader settings (JSON on stdin).

Usage: leader-get --format=json | users.py USERS_FILE

The leader keeps one setting per kv relation, `creds-<relation id>` =
`<username>:<password>:<database>`. Every unit (the leader included) turns
them into the users file the server reads: {"user": {"sha256": ..., "database":
...}} (the server never needs the password itself). Prints the number of
distinct databases, for the status message.
"""

import hashlib
import json
import os
import sys


def main():
    path = sys.argv[1]
    settings = json.load(sys.stdin) or {}
    users = {}
    for key, value in sorted(settings.items()):
        if not key.startswith("creds-") or value.count(":") != 2:
            continue
        user, password, database = value.split(":")
        users[user] = {"sha256": hashlib.sha256(password.encode("utf-8")).hexdigest(), "database": database}
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(users, f, indent=1, sort_keys=True)
    # A rename: the server sees the old file or the new one, never half of one.
    os.replace(tmp, path)
    print(len({u["database"] for u in users.values()}))


if __name__ == "__main__":
    main()
