#!/usr/bin/env python3
"""Write a synthetic one-layer OCI image layout (tag "1") without touching the
filesystem for the files: the layer tar is generated in memory and streamed.

  gen-layout.py OUT_DIR --small-files N --small-size BYTES --big-file BYTES

Small files are text (compressible, unique per file), spread over directories of
1000; the big file is random bytes. Used by bench/rss.sh to check that publish
memory stays bounded as images grow (many inlined small files, one huge file).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile


class HashWriter:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class RandomReader(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        if n <= 0:
            return 0
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def put_blob(out, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--small-files", type=int, default=0)
    ap.add_argument("--small-size", type=int, default=2048)
    ap.add_argument("--big-file", type=int, default=0)
    a = ap.parse_args()

    os.makedirs(os.path.join(a.out, "blobs", "sha256"), exist_ok=True)
    rnd = random.Random(42)
    words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))) for _ in range(5000)]

    tmp = tempfile.NamedTemporaryFile(dir=a.out, delete=False)
    tar_path = tmp.name
    hw = HashWriter(tmp)
    with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as t:
        dirs = set()
        for i in range(a.small_files):
            d = "data/d%04d" % (i // 1000)
            if d not in dirs:
                for p in ("data", d):
                    if p not in dirs:
                        ti = tarfile.TarInfo(p)
                        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                        t.addfile(ti)
                        dirs.add(p)
            body = ("file %d: " % i).encode()
            while len(body) < a.small_size:
                body += (" ".join(rnd.choices(words, k=16)) + "\n").encode()
            body = body[: a.small_size]
            ti = tarfile.TarInfo("%s/f%07d.txt" % (d, i))
            ti.size, ti.mode, ti.mtime = len(body), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(body))
        if a.big_file:
            ti = tarfile.TarInfo("big.bin")
            ti.size, ti.mode, ti.mtime = a.big_file, 0o644, 1700000000
            t.addfile(ti, io.BufferedReader(RandomReader(a.big_file), 1 << 20))
    tmp.close()
    diff_id = "sha256:" + hw.h.hexdigest()

    gz_path = tar_path + ".gz"
    if shutil.which("pigz"):
        with open(gz_path, "wb") as f:
            subprocess.run(["pigz", "-1", "-n", "-c", tar_path], stdout=f, check=True)
    else:
        with open(tar_path, "rb") as src, gzip.open(gz_path, "wb", compresslevel=1, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.unlink(tar_path)
    h = hashlib.sha256()
    with open(gz_path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    layer_digest = "sha256:" + h.hexdigest()
    layer_size = os.path.getsize(gz_path)
    os.rename(gz_path, os.path.join(a.out, "blobs", "sha256", h.hexdigest()))

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    cd, cs = put_blob(a.out, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    md, ms = put_blob(a.out, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md,
                "size": ms,
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print("%s: layer %s, %d bytes gzip, %d bytes tar" % (a.out, layer_digest, layer_size, hw.n))


if __name__ == "__main__":
    main()
