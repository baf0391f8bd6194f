"""A real local EVM dev chain (Foundry's ``anvil``) as a separate process on a loopback port.

Why anvil: it ships as a ~44 MB static binary inside an npm *platform package*
(``@foundry-rs/anvil-linux-amd64``), so ``npm ci --ignore-scripts`` from the committed
``deploy/devchain/package-lock.json`` installs it in about a second with nothing downloaded from
outside the npm registry, and it answers JSON-RPC ~50 ms after exec. It speaks EIP-1559 and
legacy transactions (``hardfork="berlin"`` has no base fee), the ``finalized``/``safe`` block
tags (finalized = latest - 2 x ``slots_in_an_epoch``), and it dumps its chain to a state file on
SIGTERM and loads it on start, so a test can stop the node and start it again with the chain
kept, as a real node restart does (its mempool is *not* kept, as on many real nodes).

The install goes into a cache directory outside the git tree, keyed by the hash of
package.json + package-lock.json: ``$FIELDPROOF_DEVCHAIN_CACHE`` or
``$XDG_CACHE_HOME/fieldproof/devchain`` (default ``~/.cache/...``). Set ``FIELDPROOF_ANVIL`` to
use an anvil binary you already have instead (e.g. a Foundry install); npm is then not needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from eth_utils.address import to_checksum_address

from fieldproof.services import ManagedProcess, ServiceError

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "devchain"
"""Where the committed package.json and package-lock.json that pin the dev node live."""

DEFAULT_CHAIN_ID = 31337
NPM_TIMEOUT_S = 600.0

_PLATFORM_PACKAGES = {
    ("linux", "x86_64"): "anvil-linux-amd64",
    ("linux", "amd64"): "anvil-linux-amd64",
    ("linux", "aarch64"): "anvil-linux-arm64",
    ("linux", "arm64"): "anvil-linux-arm64",
    ("darwin", "x86_64"): "anvil-darwin-amd64",
    ("darwin", "arm64"): "anvil-darwin-arm64",
}


class DevChainError(ServiceError):
    """The dev chain could not be installed, started or asked; the message says what to do."""


def default_cache_dir() -> Path:
    """Install root for the pinned node: outside the work tree, kept between sessions."""
    explicit = os.environ.get("FIELDPROOF_DEVCHAIN_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fieldproof" / "devchain"


def _platform_package() -> str:
    key = (platform.system().lower(), platform.machine().lower())
    try:
        return _PLATFORM_PACKAGES[key]
    except KeyError:
        raise DevChainError(
            f"no anvil build is published for {key[0]}/{key[1]}; install Foundry's anvil yourself "
            "and set FIELDPROOF_ANVIL=/path/to/anvil"
        ) from None


def _spec_key(package_dir: Path) -> str:
    """Hash of the pinned spec, so a changed lock file installs into a fresh directory."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = package_dir / name
        try:
            h.update(path.read_bytes())
        except OSError:
            raise DevChainError(
                f"{path} is missing: the dev chain installs from deploy/devchain/ in a source "
                "checkout of fieldproof (or set FIELDPROOF_ANVIL=/path/to/anvil)"
            ) from None
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise installs between processes (parallel test runs) on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_installed(cache_dir: Path | None = None, package_dir: Path = PACKAGE_DIR) -> Path:
    """Return the path of the pinned anvil binary, installing it with ``npm ci`` if needed.

    Idempotent and offline when already installed (a marker file is checked, npm is not run).
    Install scripts are not run: the binary comes in the platform package itself.
    """
    override = os.environ.get("FIELDPROOF_ANVIL")
    if override:
        if not os.access(override, os.X_OK):
            raise DevChainError(f"FIELDPROOF_ANVIL={override} is not an executable file")
        return Path(override)

    key = _spec_key(package_dir)
    root = (cache_dir or default_cache_dir()) / key
    binary = root / "node_modules" / "@foundry-rs" / _platform_package() / "bin" / "anvil"
    if _is_installed(root, key, binary):
        return binary
    try:
        _install(root, key, binary, package_dir)
    except OSError as exc:
        raise DevChainError(
            f"cannot install the dev chain under {root.parent} ({exc}); set "
            "FIELDPROOF_DEVCHAIN_CACHE to a writable directory"
        ) from exc
    return binary


def _is_installed(root: Path, key: str, binary: Path) -> bool:
    try:
        return (root / ".installed").read_text() == key and os.access(binary, os.X_OK)
    except OSError:
        return False


def _install(root: Path, key: str, binary: Path, package_dir: Path) -> None:
    """``npm ci`` into a staging directory, then rename it into place: a half-done install is
    never mistaken for a finished one."""
    with _file_lock(root.parent / f"{key}.lock"):
        if _is_installed(root, key, binary):
            return
        npm = shutil.which("npm")
        if npm is None:
            raise DevChainError(
                "npm is not installed, and it is needed once to install the dev chain (anvil) "
                "from deploy/devchain/package-lock.json. Install Node.js 20+ with npm "
                "(Debian: apt-get install nodejs npm), or set FIELDPROOF_ANVIL=/path/to/anvil."
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root.parent))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(package_dir / name, staging / name)
            try:
                done = subprocess.run(
                    [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                    cwd=staging, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
                    stdin=subprocess.DEVNULL, check=False,
                )
            except subprocess.TimeoutExpired:
                raise DevChainError(
                    f"npm ci for the dev chain did not finish in {NPM_TIMEOUT_S:.0f} s: "
                    "is the npm registry reachable?"
                ) from None
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise DevChainError(
                    f"npm ci for the dev chain failed (exit {done.returncode}); "
                    f"is the npm registry reachable?\n{tail}"
                )
            staged_binary = staging / binary.relative_to(root)
            if not os.access(staged_binary, os.X_OK):
                raise DevChainError(
                    f"npm ci succeeded but {staged_binary.relative_to(staging)} is missing: "
                    "this platform's anvil package was not installed; set FIELDPROOF_ANVIL"
                )
            if root.exists():
                shutil.rmtree(root)
            staging.rename(root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        (root / ".installed").write_text(key)


class DevChain(ManagedProcess):
    """A funded anvil node on 127.0.0.1; ``with DevChain() as chain: chain.url``.

    The chain lives in ``workdir/state.json``: ``stop()`` (SIGTERM, SIGKILL after a grace
    period) makes anvil write it and ``start()`` reloads it on the same port, so a client sees
    a node that went away and came back with its chain, but with an empty mempool.
    ``kill()`` is a crash: the chain since the last start is lost.
    Without a workdir a temporary one is made and removed on ``close()``/``__exit__``.
    """

    name = "anvil"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        chain_id: int = DEFAULT_CHAIN_ID,
        accounts: int = 10,
        automine: bool = True,
        block_time: float | None = None,
        slots_in_an_epoch: int = 1,
        hardfork: str | None = None,
        cache_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        super().__init__(Path(tempfile.mkdtemp(prefix="fieldproof-devchain-"))
                         if workdir is None else workdir, port)
        self.chain_id = chain_id
        self.n_accounts = accounts
        self.automine = automine
        self.block_time = block_time
        self.slots_in_an_epoch = slots_in_an_epoch
        self.hardfork = hardfork
        self.cache_dir = cache_dir
        self.extra_args = list(extra_args)
        self.binary: Path | None = None
        self._accounts: list[str] = []
        self._keys: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_path(self) -> Path:
        return self.workdir / "state.json"

    @property
    def config_out(self) -> Path:
        return self.workdir / "anvil-config.json"

    def command(self) -> list[str]:
        if self.binary is None:
            self.binary = ensure_installed(self.cache_dir)
        cmd = [
            str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
            "--chain-id", str(self.chain_id), "--accounts", str(self.n_accounts),
            "--slots-in-an-epoch", str(self.slots_in_an_epoch),
            "--state", str(self.state_path), "--config-out", str(self.config_out),
        ]
        if not self.automine:
            cmd.append("--no-mining")
        elif self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.hardfork:
            cmd += ["--hardfork", self.hardfork]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> None:
        """Install if needed (outside the start timeout), start, and wait for JSON-RPC."""
        if self.binary is None:
            self.binary = ensure_installed(self.cache_dir)
        with contextlib.suppress(FileNotFoundError):
            self.config_out.unlink()
        super().start(timeout)
        self._read_config()

    def is_ready(self) -> bool:
        if not self.config_out.exists():
            return False
        try:
            r = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                           "params": []}, timeout=0.5)
            return r.status_code == 200 and int(r.json()["result"], 16) == self.chain_id
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def _read_config(self) -> None:
        try:
            cfg = json.loads(self.config_out.read_text())
            self._accounts = [to_checksum_address(a) for a in cfg["available_accounts"]]
            self._keys = [str(k) for k in cfg["private_keys"]]
        except (OSError, ValueError, KeyError) as exc:
            raise DevChainError(f"anvil wrote no usable {self.config_out}: {exc}") from None

    @property
    def accounts(self) -> list[str]:
        """Checksummed addresses of the funded dev accounts (anvil's well-known test mnemonic)."""
        return list(self._accounts)

    @property
    def private_keys(self) -> list[str]:
        """Hex private keys of the dev accounts: public test keys, never for real funds."""
        return list(self._keys)

    def rpc(self, method: str, *params: Any) -> Any:
        """Call one JSON-RPC method on the node (also anvil_*/evm_* test controls)."""
        try:
            r = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": list(params)}, timeout=10)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DevChainError(f"dev chain at {self.url} did not answer {method}: {exc}") from exc
        if "error" in body:
            raise DevChainError(f"dev chain refused {method}: {body['error']}")
        return body.get("result")

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (with whatever the mempool holds)."""
        self.rpc("anvil_mine", hex(blocks))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", enabled)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        """Take a snapshot to ``revert`` to: how tests make a reorg that drops blocks."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if self.rpc("evm_revert", snapshot_id) is not True:
            raise DevChainError(f"dev chain could not revert to snapshot {snapshot_id}")

    def close(self) -> None:
        """Stop the node and remove the temporary workdir if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DevChain:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
