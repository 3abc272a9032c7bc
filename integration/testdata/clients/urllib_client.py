"""Sends one request described by the JSON in argv[1] with Python's
urllib (a multipart body, the file, or spec["json"]), the way a script would, and prints {"status": N, "retryAfter": "...", "body": "..."} or
{"error": "..."}. urllib writes the whole body before it reads the answer
and sends no Expect header."""
import json
import sys
import urllib.error
import urllib.request

spec = json.loads(sys.argv[1])
data = b""
if spec.get("file"):
    with open(spec["file"], "rb") as f:
        data = f.read()
headers = dict(spec.get("headers") or {})
if spec["mode"] == "json":
    data = json.dumps(spec["json"]).encode()
    headers["Content-Type"] = "application/json"
elif spec["mode"] == "multipart":
    b = "pyclientboundary7MA4YWxkTrZu0gW"
    parts = []
    for k, v in (spec.get("fields") or {}).items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
                 f'Content-Type: {spec["fileType"]}\r\n\r\n'.encode() + data + b"\r\n")
    for k, v in (spec.get("after") or {}).items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f"--{b}--\r\n".encode())
    data = b"".join(parts)
    headers["Content-Type"] = "multipart/form-data; boundary=" + b
req = urllib.request.Request(spec["url"], data=data, method=spec["method"], headers=headers)
try:
    with urllib.request.urlopen(req, timeout=60) as resp:
        out = {"status": resp.status, "retryAfter": resp.headers.get("Retry-After", ""), "body": resp.read().decode()}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "retryAfter": e.headers.get("Retry-After", ""), "body": e.read().decode()}
except Exception as e:  # a reset, a broken pipe: what this test looks for
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
