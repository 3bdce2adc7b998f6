"""Reads cargo's --message-format=json from stdin; prints "package executable"
for every test executable built (scripts/gpu-check.sh)."""
import json
import sys

for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        # package_id: "path+file:///.../crates/osipy-dce#0.1.0" or "...#osipy-dce@0.1.0"
        pid = m.get("package_id", "")
        name = pid.split("#")[-1].split("@")[0] if "@" in pid else pid.split("#")[0].rstrip("/").split("/")[-1]
        print(name, m["executable"])
