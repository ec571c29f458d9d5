"""The driver of Benchmarks/cloud-bench (run it through that script, which builds the release
snf-cloud and the clients' virtualenv). Runs on the venv's interpreter: python-swiftclient's
SwiftService in-process, and the venv's `swift` command."""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

BLOCK = 4 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(*argv, **kwargs):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)


def sync():
    os.sync()


class Cloud:
    """A release `snf-cloud serve` on a free port with an admin token and the catalog's URLs."""

    def __init__(self, binary, data_dir):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.password = "bench " + os.urandom(6).hex()
        out = subprocess.run(
            [binary, "bootstrap", "--data-dir", data_dir, "--listen", f"127.0.0.1:{self.port}",
             "--admin-password", self.password], check=True, capture_output=True, text=True).stdout
        self.env = dict(os.environ)
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            self.env[key] = value.strip("'")
        self.log = open(os.path.join(data_dir, "serve.log"), "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/v3", timeout=1).read()
                break
            except OSError:
                if self.process.poll() is not None:
                    sys.exit(f"cloud-bench: snf-cloud serve exited; see {data_dir}/serve.log")
                time.sleep(0.05)
        body = json.dumps({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"name": "Default"}, "password": self.password}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}).encode()
        request = urllib.request.Request(self.base + "/v3/auth/tokens", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            self.token = response.headers["X-Subject-Token"]
            catalog = json.load(response)["token"]["catalog"]
        self.endpoints = {}
        for service in catalog:
            for endpoint in service["endpoints"]:
                if endpoint["interface"] == "public":
                    self.endpoints[service["type"]] = endpoint["url"]
        self.storage = self.endpoints["object-store"]

    def request(self, method, url, body=None, headers=None):
        all_headers = {"X-Auth-Token": self.token}
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def swift(self, venv_bin, *args):
        env = dict(self.env)
        env["OS_AUTH_URL"] = self.base + "/v3"
        run(os.path.join(venv_bin, "swift"), *args, env=env)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def service_upload(service, path, name, checksum=True):
    """`swift upload` (checksum=False: `swift upload --ignore-checksum`, no MD5 on the client)."""
    from swiftclient.service import SwiftUploadObject
    options = {"checksum": checksum, "skip_container_put": True}
    for result in service.upload("bench", [SwiftUploadObject(path, object_name=name)], options=options):
        if not result["success"]:
            sys.exit(f"cloud-bench: swiftclient upload failed: {result.get('error')!r}")


def service_download(service, name):
    for result in service.download("bench", [name], options={"out_file": "/dev/null"}):
        if not result["success"]:
            sys.exit(f"cloud-bench: swiftclient download failed: {result.get('error')!r}")


class NullSink:
    """An HTTP server in a process of its own that reads each request body and discards it, then
    answers 201 with no ETag (so swiftclient checks nothing): uploading to it measures what the
    client alone costs, the ceiling any server's PUT is bounded by on this machine."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1/AUTH_sink"
        self.pid = os.fork()
        if self.pid == 0:
            try:
                while True:
                    connection, _ = self.socket.accept()
                    threading.Thread(target=NullSink.serve, args=(connection,), daemon=True).start()
            finally:
                os._exit(0)
        self.socket.close()

    @staticmethod
    def serve(connection):
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = connection.recv(65536)
                if not data:
                    return
                pending += data
            head, _, body = pending.partition(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            received = len(body)
            while received < length:
                data = connection.recv(1 << 20)
                if not data:
                    return
                received += len(data)
            pending = b""
            connection.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    def stop(self):
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


def swift_service(cloud=None, url=None):
    """python-swiftclient's SwiftService (what the `swift` command runs) on the bench's token."""
    from swiftclient.service import SwiftService
    if cloud is not None:
        return SwiftService(options={"os_auth_token": cloud.token, "os_storage_url": cloud.storage})
    return SwiftService(options={"os_auth_token": "sink", "os_storage_url": url})


def count_blocks(store):
    total = 0
    for _, _, files in os.walk(os.path.join(store, "blocks")):
        total += len(files)
    return total


def file_hashes(path):
    hashes = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(BLOCK)
            if not chunk:
                break
            hashes.append(hashlib.sha256(chunk).hexdigest())
    return hashes


def small_gets(cloud, url, seconds=5.0, clients=8):
    """GETs of one small object over keep-alive connections; returns requests/s."""
    path = urllib.parse.urlsplit(url).path
    counts = [0] * clients
    errors = []
    stop = time.perf_counter() + seconds

    def client(index):
        conn = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=30)
        try:
            while time.perf_counter() < stop:
                conn.request("GET", path, headers={"X-Auth-Token": cloud.token})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(response.status)
                    return
                counts[index] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        sys.exit(f"cloud-bench: small GET answered {errors[0]}")
    return sum(counts) / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--venv-bin", required=True)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    os.makedirs(args.dir, exist_ok=True)
    data = os.path.join(args.dir, "data")
    if not os.path.exists(data) or os.path.getsize(data) != size:
        print(f"generating {args.size_mib} MiB of random data...", file=sys.stderr)
        with open(data, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1024 * 1024))
    with open(data, "rb") as f:  # into the page cache
        while f.read(BLOCK):
            pass
    work = tempfile.mkdtemp(prefix="run.", dir=args.dir)
    cloud_dir = os.path.join(work, "cloud")
    store = os.path.join(cloud_dir, "store")
    out = os.path.join(work, "dd.out")
    cloud = Cloud(args.bin, cloud_dir)
    sink = None
    rows = []
    try:
        cloud.swift(args.venv_bin, "post", "bench")
        sink = NullSink()  # forked before this process starts threads
        service = swift_service(cloud)
        sink_service = swift_service(url=sink.url)
        tiny = os.path.join(work, "tiny")
        with open(tiny, "wb") as f:
            f.write(b"x")
        dd_put, obj_put, dd_get, obj_get, hm_put, hm_hash = [], [], [], [], [], []
        dd_direct = []
        cli_put, cli_fixed = [], []
        obj_put_nocheck, sink_put, sink_put_nocheck = [], [], []
        hm_bytes = 0
        blocks_added = []
        for run_index in range(args.runs):
            name = f"big-{run_index}"
            # Reference: the same bytes made durable with dd, on the same disk.
            if os.path.exists(out):
                os.unlink(out)
            sync()
            t, _ = timed(lambda: run("dd", f"if={data}", f"of={out}", "bs=4M", "conv=fsync", "status=none"))
            dd_put.append(t)
            # The same around the page cache (O_DIRECT), as snf-cloud writes blocks: the disk
            # alone, without the cost of page cache growing into memory this VM never touched.
            os.unlink(out)
            sync()
            t, _ = timed(lambda: run("dd", f"if={data}", f"of={out}", "bs=4M", "oflag=direct", "conv=fsync", "status=none"))
            dd_direct.append(t)
            sync()
            t, _ = timed(lambda: service_upload(service, data, name))
            obj_put.append(t)
            sync()
            t, _ = timed(lambda: service_upload(service, data, name + "-nocheck", checksum=False))
            obj_put_nocheck.append(t)
            # The client alone: the same uploads into a server that discards the bytes.
            t, _ = timed(lambda: service_upload(sink_service, data, name))
            sink_put.append(t)
            t, _ = timed(lambda: service_upload(sink_service, data, name, checksum=False))
            sink_put_nocheck.append(t)
            sync()
            t, _ = timed(lambda: run("dd", f"if={out}", "of=/dev/null", "bs=4M", "status=none"))
            dd_get.append(t)
            t, _ = timed(lambda: service_download(service, name))
            obj_get.append(t)
            # The same through the `swift` command: a new interpreter, Keystone auth, then the
            # same upload code (the fixed cost is measured apart, with a 1-byte object).
            sync()
            t, _ = timed(lambda: cloud.swift(args.venv_bin, "upload", "bench", data, "--object-name", name + "-cli"))
            cli_put.append(t)
            t, _ = timed(lambda: cloud.swift(args.venv_bin, "upload", "bench", tiny, "--object-name", "tiny"))
            cli_fixed.append(t)
            # The hashmap protocol: the client hashes its file and sends only the hash list.
            t, hashes = timed(lambda: file_hashes(data))
            hm_hash.append(t)
            body = json.dumps({"bytes": size, "hashes": hashes}).encode()
            hm_bytes = len(body)
            before = count_blocks(store)
            t, (status, _, answer) = timed(lambda: cloud.request(
                "PUT", f"{cloud.storage}/bench/{name}-hashmap?hashmap&format=json", body,
                {"Content-Type": "application/json"}))
            if status != 201:
                sys.exit(f"cloud-bench: hashmap PUT answered {status}: {answer[:200]!r}")
            hm_put.append(t)
            blocks_added.append(count_blocks(store) - before)
        os.unlink(out)

        mib = args.size_mib
        med = statistics.median
        rows.append(("dd bs=4M conv=fsync (write)", med(dd_put), mib / med(dd_put), None))
        rows.append(("dd bs=4M oflag=direct conv=fsync (write)", med(dd_direct), mib / med(dd_direct), None))
        rows.append(("swiftclient upload (object PUT)", med(obj_put), mib / med(obj_put), med(dd_put) / med(obj_put)))
        rows.append(("  the same client into a null sink", med(sink_put), mib / med(sink_put), med(dd_put) / med(sink_put)))
        rows.append(("swiftclient upload --ignore-checksum", med(obj_put_nocheck), mib / med(obj_put_nocheck),
                     med(dd_put) / med(obj_put_nocheck)))
        rows.append(("  the same client into a null sink", med(sink_put_nocheck), mib / med(sink_put_nocheck),
                     med(dd_put) / med(sink_put_nocheck)))
        rows.append(("dd of=/dev/null (read)", med(dd_get), mib / med(dd_get), None))
        rows.append(("swiftclient download (object GET)", med(obj_get), mib / med(obj_get), med(dd_get) / med(obj_get)))
        rows.append(("`swift upload` command, 1 byte", med(cli_fixed), None, None))
        rows.append(("`swift upload` command (object PUT)", med(cli_put), mib / med(cli_put), med(dd_put) / med(cli_put)))
        rows.append(("client hashing (sha256 per 4 MiB)", med(hm_hash), mib / med(hm_hash), None))
        rows.append(("hashmap PUT of the stored bytes", med(hm_put), mib / med(hm_put), med(obj_put) / med(hm_put)))

        register_rows = register_and_clone(cloud, store, args.runs, args.size_mib)
        status, _, _ = cloud.request("PUT", f"{cloud.storage}/bench/small", os.urandom(1024))
        if status != 201:
            sys.exit(f"cloud-bench: small PUT answered {status}")
        rps = small_gets(cloud, f"{cloud.storage}/bench/small")
    finally:
        cloud.stop()
        if sink is not None:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"snf-cloud benchmark: {args.size_mib} MiB object, median of {args.runs} runs, "
          f"load {os.getloadavg()[0]:.2f}, dir {args.dir}")
    print(f"{'measurement':<42} {'seconds':>9} {'MiB/s':>9} {'ratio':>8}")
    for label, seconds, rate, ratio in rows:
        r = f"{ratio:.2f}" if ratio is not None else ""
        rate_text = f"{rate:.1f}" if rate is not None else ""
        print(f"{label:<42} {seconds:>9.3f} {rate_text:>9} {r:>8}")
    print("  swiftclient upload/download: python-swiftclient's SwiftService (the code `swift upload` and")
    print("  `swift download` run, MD5 check included) in this process, with a token issued beforehand;")
    print("  the `swift upload` command adds an interpreter start and a Keystone auth (the 1-byte row);")
    print("  null sink: a server that reads and drops the body, so the row is the client's own cost:")
    print("  no server can make that client's PUT faster on this machine;")
    print("  --ignore-checksum: the client computes no MD5 (snf-cloud still does, for the ETag);")
    print("  ratio: object PUT/GET = reference time / snf-cloud time (1.00 = as fast as dd);")
    print("  PUT ratios are against the first dd row (conv=fsync, through the page cache); against")
    print(f"  oflag=direct the PUT is {med(dd_direct) / med(obj_put):.2f} (--ignore-checksum: "
          f"{med(dd_direct) / med(obj_put_nocheck):.2f}). The page cache dd varies most: on this")
    print("  kind of VM, memory is backed on first touch, so its speed depends on what ran before;")
    print("  hashmap PUT = full upload time / hashmap PUT time")
    print(f"hashmap PUT sent {hm_bytes} bytes of JSON for {args.size_mib} MiB; "
          f"blocks added to the store: {blocks_added}")
    for label, seconds, extra in register_rows:
        print(f"{label:<42} {seconds * 1000:>9.1f} ms  {extra}")
    print("  (the issue asks for under 50 ms each, with no block added)")
    print(f"small-object GET (1 KiB, 8 keep-alive clients): {rps:.0f} requests/s")
    ok_put = med(dd_put) / med(obj_put) >= 0.6
    ok_put_nocheck = med(dd_put) / med(obj_put_nocheck) >= 0.6
    print(f"-> object PUT >= 60% of dd: {'ok' if ok_put else 'NO'} "
          f"(--ignore-checksum: {'ok' if ok_put_nocheck else 'NO'}; snf-cloud / null sink: "
          f"{med(sink_put) / med(obj_put):.2f}, {med(sink_put_nocheck) / med(obj_put_nocheck):.2f}); "
          f"hashmap re-upload adds no block: {'ok' if all(b == 0 for b in blocks_added) else 'NO'}")


def register_and_clone(cloud, store, runs, size_mib):
    """Registers the first big object as a Glance image (`snf_source_object`) and makes a Cinder
    volume from that image, `runs` times: the median latency of each API call as the client sees
    it, and the blocks the store gained over all of them."""
    register, clone = [], []
    before = count_blocks(store)
    gib = max(1, -(-size_mib // 1024))
    for index in range(runs):
        body = json.dumps({"name": f"bench-image-{index}", "disk_format": "raw", "container_format": "bare",
                           "snf_source_object": "bench/big-0"}).encode()
        t, (status, _, answer) = timed(lambda: cloud.request(
            "POST", f"{cloud.endpoints['image']}/v2/images", body, {"Content-Type": "application/json"}))
        if status != 201:
            sys.exit(f"cloud-bench: image register answered {status}: {answer[:200]!r}")
        register.append(t)
        image = json.loads(answer)
        body = json.dumps({"volume": {"size": gib, "imageRef": image["id"], "name": f"bench-volume-{index}"}}).encode()
        t, (status, _, answer) = timed(lambda: cloud.request(
            "POST", f"{cloud.endpoints['volumev3']}/volumes", body, {"Content-Type": "application/json"}))
        if status not in (200, 202):
            sys.exit(f"cloud-bench: volume from image answered {status}: {answer[:200]!r}")
        clone.append(t)
    added = count_blocks(store) - before
    med = statistics.median
    return [
        ("register object as image (Glance POST)", med(register), f"blocks added by all: {added}"),
        ("volume from image (Cinder POST)", med(clone), f"{gib} GiB thin clone"),
    ]


if __name__ == "__main__":
    main()
