"""Throwaway certificates for TLS tests, made with the openssl command-line tool.

CA(dir) makes a test CA (EC P-256) in dir; ca.issue(name, cn, serial) a server
certificate it signs for localhost and 127.0.0.1, returning (cert path, key path).
Nothing is ever reused across tests: each test makes its own in its temp dir.
"""

import os
import shutil
import subprocess

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def need_openssl():
    if not os.access(OPENSSL, os.X_OK):
        raise AssertionError("the openssl command is missing (make deps-test installs it)")


def _run(args, cwd):
    out = subprocess.run([OPENSSL] + args, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, "openssl %s: %s%s" % (" ".join(args), out.stdout, out.stderr)


class CA:
    def __init__(self, dir, name="wsgate test CA"):
        need_openssl()
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.cert = os.path.join(dir, "ca.pem")
        self.key = os.path.join(dir, "ca.key")
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=" + name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)

    def issue(self, name, cn="localhost", serial=1000, days=2):
        """A server certificate and its key, as name.pem and name.key in the CA's dir."""
        cert = os.path.join(self.dir, name + ".pem")
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "authorityKeyIdentifier=keyid\n"
                    "subjectKeyIdentifier=hash\n")
        _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=" + cn], self.dir)
        _run(["x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-set_serial", str(serial), "-days", str(days), "-out", cert, "-extfile", ext],
             self.dir)
        return cert, key

    def context(self):
        """A client SSLContext that trusts this CA only and checks the host name."""
        import ssl
        return ssl.create_default_context(cafile=self.cert)


def self_signed(dir, name="server", cn="localhost"):
    """A self-signed pair (for config checks that only need something valid)."""
    need_openssl()
    os.makedirs(dir, exist_ok=True)
    cert = os.path.join(dir, name + ".pem")
    key = os.path.join(dir, name + ".key")
    _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], dir)
    return cert, key
