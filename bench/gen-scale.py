#!/usr/bin/env python3
"""Write ONE synthetic OCI image layout holding many small images (issue 5, "Scale").

  gen-scale.py OUT_DIR [--images N] [--seed S] [--jobs J]

Layers (gzip, linux/amd64, every tar byte deterministic for a given seed):
  base 0  "os"      ~3000 entries: etc/, usr/bin, usr/sbin, usr/lib/x86_64-linux-gnu
                    (libraries with .so.N -> .so.N.M.K symlinks), usr/share/doc/<pkg>,
                    usr/share/man, var/lib/dpkg/info
  base 1  "python"  ~2400 entries under usr/lib/python3.11 (.py, __pycache__/*.pyc)
  base 2  "node"    ~2000 entries under usr/lib/node_modules
  base 3  "jvm"     ~1600 entries under usr/lib/jvm (many identical legal/ files)
Image k (tag "i%05d" % k, k = 1..N) = base 0 + base 1 + (k-1) % 3 + one unique top layer
of 50-300 entries: app/... source files (most unique to the image, ~30% taken from a
shared pool of "vendored" files), app/config.json naming the image, a symlink, an
edited etc/hostname, and in every tenth image a whiteout of a usr/share/doc directory.

Files are small (32 B - 16 KiB in the top layers, so about half are inlined by stratum),
content comes from seeded pools (text and random bytes) with a per-file header, so
it is unique per path and image. Blobs are streamed to disk: the tar is hashed (diff_id)
while it is gzipped (compresslevel 1, mtime 0) and the gzip stream is hashed (digest).

The layout is extended in place: OUT_DIR/.gen/state.json records the parameters and the
descriptor of every image written so far; a second run with the same parameters and a
larger N writes only the new images, a run with a smaller N only rewrites index.json
(which always lists exactly images 1..N, in tag order).
"""
import argparse
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import random
import sys
import tarfile
import time

MTIME = 1700000000
GEN_VERSION = 1
TEXT_POOL = 1 << 21  # 2 MiB of words
BIN_POOL = 1 << 22  # 4 MiB of random bytes
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"


class HashWriter:
    """A write-only file object that hashes (sha256) and counts what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class Pools:
    def __init__(self, seed):
        r = random.Random(seed * 7919 + 1)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(r.choice(letters) for _ in range(r.randint(2, 10))) for _ in range(8000)]
        self.words = words
        out, n = [], 0
        while n < TEXT_POOL + 65536:
            line = " ".join(r.choices(words, k=r.randint(4, 14))) + "\n"
            out.append(line)
            n += len(line)
        self.text = "".join(out).encode()
        self.bin = r.randbytes(BIN_POOL + 65536)

    def body(self, r, header, size, binary=False):
        """`size` bytes: the header, then a slice of a pool at a random offset."""
        h = header.encode()
        if len(h) >= size:
            return h[:size]
        pool, lim = (self.bin, BIN_POOL) if binary else (self.text, TEXT_POOL)
        need = size - len(h)
        parts, off = [h], r.randrange(0, lim)
        while need > 0:
            take = min(need, len(pool) - off)
            parts.append(pool[off : off + take])
            need -= take
            off = 0
        return b"".join(parts)


def logsize(r, lo, hi):
    """Log-uniform integer in [lo, hi]."""
    return int(math.exp(r.uniform(math.log(lo), math.log(hi))))


class LayerWriter:
    """Streams one tar layer (PAX) through gzip into OUT/blobs/sha256/<digest>."""

    def __init__(self, out, name):
        self.out = out
        self.tmp = os.path.join(out, "blobs", "sha256", ".tmp-%s-%d" % (name, os.getpid()))
        self.f = open(self.tmp, "wb")
        self.gz_hash = HashWriter(self.f)
        self.gz = gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=self.gz_hash, mtime=0)
        self.tar_hash = HashWriter(self.gz)
        self.t = tarfile.open(fileobj=self.tar_hash, mode="w|", format=tarfile.PAX_FORMAT)
        self.dirs = set()
        self.entries = 0

    def _info(self, path, typ, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = typ, mode, MTIME, uid, gid
        ti.uname = ti.gname = "root" if uid == 0 else ""
        return ti

    def dir(self, path, mode=0o755):
        """Add directory `path` and its missing parents (tar order: parents first)."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.dirs:
                self.dirs.add(p)
                self.t.addfile(self._info(p, tarfile.DIRTYPE, mode))
                self.entries += 1

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.t.addfile(ti, _Reader(data))
        self.entries += 1

    def symlink(self, path, target):
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.t.addfile(ti)
        self.entries += 1

    def whiteout(self, path):
        d, b = os.path.split(path)
        self.file(os.path.join(d, ".wh." + b), b"")

    def close(self):
        self.t.close()
        self.gz.close()
        self.f.close()
        digest = self.gz_hash.h.hexdigest()
        os.replace(self.tmp, os.path.join(self.out, "blobs", "sha256", digest))
        return {
            "digest": "sha256:" + digest,
            "size": self.gz_hash.n,
            "diff_id": "sha256:" + self.tar_hash.h.hexdigest(),
            "tar_bytes": self.tar_hash.n,
            "entries": self.entries,
        }


class _Reader:
    """Minimal file object over bytes for tarfile.addfile (cheaper than BytesIO copies)."""

    __slots__ = ("b", "o")

    def __init__(self, b):
        self.b, self.o = b, 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self.b) - self.o
        r = self.b[self.o : self.o + n]
        self.o += len(r)
        return r

    def readinto(self, buf):
        r = self.read(len(buf))
        buf[: len(r)] = r
        return len(r)


def put_blob(out, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(out, "blobs", "sha256", d)
    if not os.path.exists(p):
        tmp = p + ".tmp%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    return "sha256:" + d, len(data)


# ---------------------------------------------------------------------------------------
# Base layers

PKG_WORDS = ["lib", "core", "util", "net", "ssl", "xml", "z", "bz", "lz", "ffi", "gpg", "krb", "ldap",
             "sasl", "pam", "cap", "acl", "attr", "udev", "dbus", "glib", "icu", "pcre", "ncurses", "readline",
             "sqlite", "curl", "idn", "nghttp", "psl", "brotli", "zstd", "xxhash", "gmp", "mpfr", "nettle",
             "tasn", "unistring", "seccomp", "selinux", "semanage", "sepol", "systemd", "apt", "dpkg", "perl",
             "python", "tcl", "expat", "yaml", "jansson", "uuid", "blkid", "mount", "smartcols", "fdisk"]


def base_os(w, r, p):
    n_pkg = 330
    names = []
    for i in range(n_pkg):
        names.append("%s%s%d" % (r.choice(PKG_WORDS), r.choice(["", "-utils", "-common", "-bin", "-data"]), i))
    # etc
    for i in range(90):
        w.file("etc/%s%d.conf" % (r.choice(p.words), i), p.body(r, "# etc %d\n" % i, logsize(r, 40, 6000)))
    w.file("etc/hostname", b"base\n")
    w.file("etc/os-release", b'PRETTY_NAME="stratum scale base"\nID=scale\n')
    for i in range(25):
        w.file("etc/default/%s%d" % (r.choice(p.words), i), p.body(r, "# default %d\n" % i, logsize(r, 60, 2000)))
    for name in names:
        # one binary, one man page, a doc dir with copyright and changelog, the dpkg info
        if r.random() < 0.8:
            b = "usr/%s/%s" % ("bin" if r.random() < 0.85 else "sbin", name)
            w.file(b, p.body(r, "\x7fELF %s\n" % name, logsize(r, 2000, 250000), binary=True), 0o755)
            w.file("usr/share/man/man1/%s.1.gz" % name, p.body(r, name, logsize(r, 300, 9000), binary=True))
        if name.startswith("lib") or r.random() < 0.3:
            major, minor, patch = r.randint(0, 9), r.randint(0, 40), r.randint(0, 20)
            so = "usr/lib/x86_64-linux-gnu/lib%s.so" % name.replace("lib", "", 1).replace("-", "_")
            real = "%s.%d.%d.%d" % (so, major, minor, patch)
            w.file(real, p.body(r, "\x7fELF %s\n" % real, logsize(r, 5000, 600000), binary=True))
            w.symlink("%s.%d" % (so, major), os.path.basename(real))
        doc = "usr/share/doc/%s" % name
        w.file(doc + "/copyright", p.body(r, "Format: copyright %s\n" % name, logsize(r, 300, 20000)))
        w.file(doc + "/changelog.Debian.gz", p.body(r, name, logsize(r, 200, 12000), binary=True))
        if r.random() < 0.2:
            w.file(doc + "/README", p.body(r, "%s README\n" % name, logsize(r, 100, 5000)))
        w.file("var/lib/dpkg/info/%s.list" % name, p.body(r, "/.\n/usr/bin/%s\n" % name, logsize(r, 40, 3000)))
        w.file("var/lib/dpkg/info/%s.md5sums" % name, p.body(r, "%s md5\n" % name, logsize(r, 40, 2500)))
    w.file("var/lib/dpkg/status", p.body(r, "Package: base\n", 400000))
    w.symlink("usr/bin/sh", "dash")
    w.dir("tmp", 0o1777)
    w.dir("root", 0o700)
    return {"doc_dirs": names}


def base_python(w, r, p):
    root = "usr/lib/python3.11"
    for m in range(150):
        pkg = "%s/%s%d" % (root, r.choice(p.words), m)
        for f in range(r.randint(2, 14)):
            mod = "%s%d" % (r.choice(p.words), f)
            w.file("%s/%s.py" % (pkg, mod), p.body(r, "# %s.%s\n" % (pkg, mod), logsize(r, 60, 40000)))
            w.file("%s/__pycache__/%s.cpython-311.pyc" % (pkg, mod), p.body(r, pkg + mod, logsize(r, 200, 30000), binary=True))
        w.file("%s/__init__.py" % pkg, b"" if r.random() < 0.6 else p.body(r, "# init\n", logsize(r, 20, 800)))
    w.file("usr/bin/python3.11", p.body(r, "\x7fELF python\n", 5_800_000, binary=True), 0o755)
    w.symlink("usr/bin/python3", "python3.11")
    w.symlink("usr/bin/python", "python3")


def base_node(w, r, p):
    root = "usr/lib/node_modules"
    for m in range(260):
        pkg = "%s/%s-%d" % (root, r.choice(p.words), m)
        w.file(pkg + "/package.json", p.body(r, '{"name": "%s", "version": "1.%d.0"}\n' % (pkg, m), logsize(r, 200, 3000)))
        w.file(pkg + "/LICENSE", b"MIT License\n\nPermission is hereby granted, free of charge...\n" * 20)
        if r.random() < 0.7:
            w.file(pkg + "/README.md", p.body(r, "# %s\n" % pkg, logsize(r, 100, 15000)))
        w.file(pkg + "/index.js", p.body(r, "// %s\n" % pkg, logsize(r, 50, 4000)))
        for f in range(r.randint(0, 6)):
            w.file("%s/lib/%s%d.js" % (pkg, r.choice(p.words), f), p.body(r, "// %s %d\n" % (pkg, f), logsize(r, 100, 25000)))
    w.file("usr/bin/node", p.body(r, "\x7fELF node\n", 9_000_000, binary=True), 0o755)
    w.symlink("usr/bin/npm", "../lib/node_modules/npm-0/bin/npm-cli.js")


def base_jvm(w, r, p):
    root = "usr/lib/jvm/java-17-openjdk-amd64"
    legal = b"Copyright (c) Oracle and/or its affiliates. GPLv2 with the Classpath exception.\n" * 30
    for m in range(70):
        mod = "java.%s%d" % (r.choice(p.words), m)
        for f in ("LICENSE", "ADDITIONAL_LICENSE_INFO", "ASSEMBLY_EXCEPTION"):
            w.file("%s/legal/%s/%s" % (root, mod, f), legal)  # identical content: one object
        w.file("%s/jmods/%s.jmod" % (root, mod), p.body(r, mod, logsize(r, 10000, 900000), binary=True))
    for i in range(900):
        w.file("%s/include/%s%d.h" % (root, r.choice(p.words), i), p.body(r, "/* h %d */\n" % i, logsize(r, 80, 9000)))
    for i in range(120):
        w.file("%s/conf/%s%d.properties" % (root, r.choice(p.words), i), p.body(r, "# conf %d\n" % i, logsize(r, 50, 5000)))
    for i in range(60):
        w.file("%s/lib/lib%s%d.so" % (root, r.choice(p.words), i), p.body(r, "\x7fELF\n", logsize(r, 10000, 1_500_000), binary=True))
    w.file(root + "/lib/modules", p.body(r, "jimage\n", 4_000_000, binary=True))
    w.file(root + "/bin/java", p.body(r, "\x7fELF java\n", 14000, binary=True), 0o755)
    w.symlink("usr/bin/java", "../lib/jvm/java-17-openjdk-amd64/bin/java")


BASES = [("os", base_os), ("python", base_python), ("node", base_node), ("jvm", base_jvm)]
RUNTIMES = 3  # image k stacks base 0 and base 1 + (k-1) % RUNTIMES
VENDOR_POOL = 2000


# ---------------------------------------------------------------------------------------
# Images

_pools = None


def _init(seed):
    global _pools
    _pools = Pools(seed)


def vendor_file(p, seed, j):
    """The j-th shared vendored file: the same path and bytes in every image using it."""
    r = random.Random(seed * 1_000_003 + 500_000_000 + j)
    path = "app/vendor/%s/%s%d.py" % (p.words[j % 97], p.words[(j * 31) % 8000], j)
    return path, p.body(r, "# vendored %d\n" % j, logsize(r, 64, 12000))


def make_image(args):
    out, seed, k, bases = args
    doc_dirs = bases[0]["extra"]["doc_dirs"]
    p = _pools
    r = random.Random(seed * 1_000_003 + k)
    tag = "i%05d" % k
    w = LayerWriter(out, tag)
    n = r.randint(50, 300)
    w.file("app/config.json", json.dumps({"image": k, "tag": tag, "replicas": r.randint(1, 9)}, indent=2).encode() + b"\n")
    w.file("etc/hostname", ("scale-%05d\n" % k).encode())
    w.symlink("app/bin/start", "../main.py")
    w.file("app/main.py", p.body(r, "#!/usr/bin/env python3\n# image %d\n" % k, logsize(r, 200, 4000)), 0o755)
    if k % 10 == 0:
        w.whiteout("usr/share/doc/%s" % r.choice(doc_dirs))  # delete a directory of base 0
    made = w.entries
    used = set()
    mods = ["%s%d" % (r.choice(p.words), i) for i in range(r.randint(2, 12))]
    i = 0
    while made < n:
        if r.random() < 0.3:
            path, data = vendor_file(p, seed, r.randrange(VENDOR_POOL))
            if path in used:
                continue
            used.add(path)
            w.file(path, data)
        else:
            mod = r.choice(mods)
            ext = r.choice([".py", ".py", ".py", ".json", ".txt", ".sql", ".html", ".dat"])
            path = "app/%s/%s_%d%s" % (mod, r.choice(p.words), i, ext)
            w.file(path, p.body(r, "# image %d %s\n" % (k, path), logsize(r, 32, 16384), binary=(ext == ".dat")))
        i += 1
        made = w.entries
    top = w.close()
    layers = bases[0], bases[1 + (k - 1) % RUNTIMES], top
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE=%d" % k],
            "Cmd": ["/app/bin/start"],
            "WorkingDir": "/app",
            "Labels": {"org.example.scale.image": str(k)},
        },
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "gen-scale.py layer %d" % i} for i in range(len(layers))],
    }
    cd, cs = put_blob(out, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cd, "size": cs},
        "layers": [{"mediaType": MT_LAYER, "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    md, ms = put_blob(out, json.dumps(manifest, sort_keys=True).encode())
    return {"tag": tag, "digest": md, "size": ms, "top_entries": top["entries"], "top_tar": top["tar_bytes"], "top_gz": top["size"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the top layers (default 1)")
    a = ap.parse_args()
    if not 1 <= a.images <= 99999:
        sys.exit("--images must be 1..99999")
    blobs = os.path.join(a.out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(os.path.join(a.out, ".gen"), exist_ok=True)
    state_path = os.path.join(a.out, ".gen", "state.json")
    params = {"version": GEN_VERSION, "seed": a.seed}
    state = None
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if state.get("params") != params:
            sys.exit("%s holds a layout of other parameters (%s); remove it first" % (a.out, state.get("params")))
    t0 = time.time()
    if state is None:
        _init(a.seed)
        bases = []
        for i, (name, fn) in enumerate(BASES):
            w = LayerWriter(a.out, "base-" + name)
            extra = fn(w, random.Random(a.seed * 1000 + i), _pools)
            d = w.close()
            d["extra"] = extra or {}
            d["name"] = name
            bases.append(d)
            print("base %d %-6s %5d entries, %6.1f MB tar, %6.1f MB gzip" % (i, name, d["entries"], d["tar_bytes"] / 1e6, d["size"] / 1e6), file=sys.stderr)
        state = {"params": params, "bases": bases, "images": []}
    bases = state["bases"]
    have = len(state["images"])
    if have < a.images:
        work = [(a.out, a.seed, k, bases) for k in range(have + 1, a.images + 1)]
        if a.jobs > 1:
            pool = multiprocessing.Pool(a.jobs, initializer=_init, initargs=(a.seed,))
            it = pool.imap(make_image, work, chunksize=16)
        else:
            if _pools is None:
                _init(a.seed)
            pool, it = None, map(make_image, work)
        for rec in it:
            state["images"].append(rec)
            k = len(state["images"])
            if k % 1000 == 0:
                print("  %d images, %.0f s" % (k, time.time() - t0), file=sys.stderr)
                with open(state_path + ".tmp", "w") as f:
                    json.dump(state, f)
                os.replace(state_path + ".tmp", state_path)
        if pool:
            pool.close()
            pool.join()
    with open(state_path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(state_path + ".tmp", state_path)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": MT_MANIFEST, "digest": rec["digest"], "size": rec["size"],
             "platform": {"architecture": "amd64", "os": "linux"},
             "annotations": {"org.opencontainers.image.ref.name": rec["tag"]}}
            for rec in state["images"][: a.images]
        ],
    }
    with open(os.path.join(a.out, "index.json.tmp"), "w") as f:
        json.dump(index, f)
    os.replace(os.path.join(a.out, "index.json.tmp"), os.path.join(a.out, "index.json"))
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    imgs = state["images"][: a.images]
    base_entries = bases[0]["entries"] + sum(bases[1 + (int(x["tag"][1:]) - 1) % RUNTIMES]["entries"] for x in imgs) / max(1, len(imgs))
    summary = {
        "images": len(imgs),
        "bases": [{k: b[k] for k in ("name", "entries", "tar_bytes", "size")} for b in bases],
        "top_entries": sum(x["top_entries"] for x in imgs),
        "top_tar_bytes": sum(x["top_tar"] for x in imgs),
        "top_gz_bytes": sum(x["top_gz"] for x in imgs),
        "tar_entries_per_image_avg": round(base_entries + sum(x["top_entries"] for x in imgs) / max(1, len(imgs)), 1),
        "tar_entries_all_images": int(sum(bases[0]["entries"] + bases[1 + (int(x["tag"][1:]) - 1) % RUNTIMES]["entries"] + x["top_entries"] for x in imgs)),
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(a.out, ".gen", "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
