"""``fieldproof export`` (operator) and ``fieldproof verify`` (inspector).

Exit codes of ``verify``: 0 the bundle passed (warnings allowed unless ``--strict``), 1 it
failed, 2 the command could not run as asked (bad option, unreadable file, no PDF engine).
With several bundles (one per collector's log, docs/bundle.md §11) the verdict and exit code
are the worst over every bundle and the analysis across them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fieldproof.cli_common import read_small, write_atomic
from fieldproof.formats.bundle import Limits

if TYPE_CHECKING:
    from inspector.combine import MultiResult
    from inspector.policy import Policy
    from inspector.verify import InfluxAuth, VerificationResult, VerifyOptions

__all__ = ["verify_command"]


def _influx_auth(user: str | None, password_file: Path | None) -> InfluxAuth | None:
    """InfluxDB credentials from --influx-user and the password's file or environment, or the
    token's environment variable: never from the command line, where other users and shell
    history can read them."""
    from inspector.verify import InfluxAuth, UsageError

    token = os.environ.get("FIELDPROOF_INFLUX_TOKEN") or None
    password: str | None = None
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(
                f"--influx-password-file: cannot read {password_file}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    elif user is not None:
        password = os.environ.get("FIELDPROOF_INFLUX_PASSWORD")
    if user is None and token is None and password is None:
        return None
    try:
        return InfluxAuth(username=user, password=password, token=token)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


def _where(farm: str | None, field: str | None) -> str:
    """A gateway's farm and field, or that no proven enrollment names them."""
    if farm is None and field is None:
        return "no proven enrollment"
    return f"farm {farm or '?'} field {field or '?'}"


def _seqs(first: int | None, last: int | None) -> str:
    return "no verified message" if first is None or last is None else f"seq {first}–{last}"


def _human(result: object) -> str:
    from inspector.verify import VerificationResult

    assert isinstance(result, VerificationResult)
    from inspector.seal_check import seal_line

    lines = [result.summary_line(), f"  completeness: {result.completeness.line()}",
             f"  seal: {seal_line(result.seal)}", ""]
    for f in result.findings:
        more = f" (x{f.count})" if f.count > 1 else ""
        lines.append(f"  {f.severity.upper():7} {f.code}: {f.message}{more}")
    if result.findings:
        lines.append("")
    for g in result.gateways:
        lines.append(
            f"  {g.gateway}  {_where(g.farm, g.field)}: {g.verified_messages}/{g.messages} "
            f"messages, {g.readings} readings, {_seqs(g.first_seq, g.last_seq)}, "
            f"{len(g.gaps)} gap(s), {g.outside_anchored} outside anchored range"
            + (f", evidence {g.completeness}" if g.completeness else "")
        )
    for k in result.known_checkpoints:
        lines.append(f"  known checkpoint #{k.number} size {k.size}: {k.status.upper()}"
                     + (f" ({k.detail})" if k.detail else ""))
    for v in result.outside_checkpoints:
        by = f", cosigned by {', '.join(v['cosigned_by'])}" if v["cosigned_by"] else ""
        lines.append(f"  {v['source']} size {v['size']}{by}: {v['status'].upper()}"
                     + (f" ({v['detail']})" if v["detail"] else ""))
    if result.policy is not None:
        p = result.policy
        lines.append(f"  policy ({p['policy']}, quorum {p['quorum']}): "
                     f"{p['status'].upper().replace('_', ' ')}")
        for c in p["checkpoints"]:
            lines.append(f"    checkpoint {c['position']} size {c['size']}: cosigned by "
                         f"{', '.join(c['signed']) or 'none'}; missing "
                         f"{', '.join(c['missing']) or 'none'}; "
                         + ("counts" if c["counts"] else
                            "covered by a later one" if c["covered"] else "does NOT count"))
    if result.all_anchors is not None:
        scan = result.all_anchors
        lines.append(f"  all anchors on {scan['chain']}: blocks {scan['first_block']}–"
                     f"{scan['last_block']}{'' if scan['complete'] else ' (INCOMPLETE)'}, "
                     f"{len(scan['anchors'])} anchor(s) of this log found")
        for x in scan["anchors"]:
            lines.append(f"    tx {x['tx']} block {x['block_number']} size {x['size']}: "
                         f"{x['status'].upper()}")
    for c in result.checkpoints:
        for a in c.anchors:
            state = ("claimed" if result.offline else "verified" if a.verified else
                     "not checked" if not a.checked else "FAILED")
            lines.append(f"  checkpoint {c.position} size {c.size}: {a.ref.chain} tx {a.ref.tx} "
                         f"block {a.ref.block_number} — {state}")
    return "\n".join(lines)


def _human_multi(multi: MultiResult) -> str:
    lines = [multi.summary_line(), ""]
    for f in multi.all_findings():
        more = f" (x{f.count})" if f.count > 1 else ""
        lines.append(f"  {f.severity.upper():7} {f.code} [{', '.join(f.bundles)}]: "
                     f"{f.message}{more}")
    if multi.all_findings():
        lines.append("")
    for b in multi.bundles:
        r = b.result
        lines.append(f"  {b.label}: {b.verdict.upper()} — log {r.origin or '(unreadable)'}"
                     f"{' (key pinned)' if r.log_key_pinned else ''}: {r.summary()}")
        lines.append(f"    completeness: {r.completeness.line()}")
    lines.append("")
    for g in multi.combined.gateways:
        share = ", ".join(f"{label} {n}" for label, n in g.bundles.items())
        lines.append(
            f"  {g.gateway}  {_where(g.farm, g.field)}: {g.verified_messages} distinct "
            f"messages ({share}), {g.readings} readings, {_seqs(g.first_seq, g.last_seq)}, "
            f"{len(g.gaps)} gap(s) over all bundles, {g.logged_twice} logged twice, "
            f"{g.conflicts} conflicting")
    return "\n".join(lines)


def _labels(paths: tuple[Path, ...]) -> list[str]:
    """Names for the bundles in findings: the paths as given, made unique."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        name = str(p)
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _as_single(multi: MultiResult) -> VerificationResult:
    """One bundle verified with several pinned keys: today's single result (and JSON), with
    the key matching's findings added."""
    from inspector.combine import UNION_CODES, verdict_of

    b = multi.bundles[0]
    result = b.result
    combined = {id(f) for f in multi.combined.findings}
    run = [f for f in multi.findings if id(f) not in combined]
    for f in run:
        f.bundles = ()
    found = b.findings + [f for f in result.findings if f.code in UNION_CODES] + run
    result.findings = sorted(found, key=lambda f: ("error", "warning", "info").index(
        f.severity))
    result.verdict = verdict_of(result.findings)
    return result


@click.command("verify")
@click.argument("bundles", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--node", "nodes", multiple=True,
              help="chain node URL to ask (repeat: several independent nodes are cross-checked)")
@click.option("--chain", type=click.Choice(["thor", "evm"]), default=None,
              help="which anchors to check (default: the bundle's only kind)")
@click.option("--log-key", "log_keys", multiple=True,
              help="the log's published verifier key (name+id+base64); without it the "
                   "bundle's own key is used and flagged. Repeatable with several bundles: "
                   "each key is matched to the bundle of the log it names")
@click.option("--offline", is_flag=True, help="check everything except the chain, and say so")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write an HTML report here (and a PDF beside it)")
@click.option("--pdf/--no-pdf", default=True, show_default=True, help="PDF with --report")
@click.option("--against-influx", "influx_url", default=None,
              help="compare the operator's InfluxDB (URL) with what the evidence proves")
@click.option("--database", default="fieldproof", show_default=True,
              help="InfluxDB database for --against-influx")
@click.option("--influx-user", default=None,
              help="InfluxDB 1.x user for --against-influx; the password comes from "
                   "FIELDPROOF_INFLUX_PASSWORD or --influx-password-file (a 2.x token from "
                   "FIELDPROOF_INFLUX_TOKEN)")
@click.option("--influx-password-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="file holding the --influx-user password (first line)")
@click.option("--known-checkpoint", "known", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="a signed checkpoint of this log you already trust, e.g. from an earlier "
                   "audit (repeatable): the bundle must prove it extends it")
@click.option("--save-checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="after a passing verification, write the bundle's newest anchored "
                   "checkpoint here, to pass as --known-checkpoint next time")
@click.option("--strict", is_flag=True, help="warnings fail too (exit 1)")
@click.option("--require-complete", is_flag=True,
              help="fail (exit 1) when no completeness seal of the log proves the bundle "
                   "complete (a bundle of an older log or format)")
@click.option("--max-size", type=click.IntRange(1), default=Limits().max_bytes,
              show_default=True, help="largest bundle accepted, in bytes")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="processes for signature checks (default: all cores)")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="trust policy (Sigsum/C2SP policy file: log, witness, group, quorum): a "
                   "checkpoint counts only when its witness cosignatures meet the quorum or it "
                   "has a verified final anchor; its log line pins the log key")
@click.option("--require-quorum", is_flag=True,
              help="with --policy: only the witnesses' quorum counts, not anchors")
@click.option("--mirror", "mirrors", multiple=True, metavar="DIR|URL",
              help="a mirror of the log (directory or URL of its tlog-tiles, e.g. kept by "
                   "'fieldproof log mirror'; repeatable): its checkpoint and tiles must agree "
                   "with the bundle's checkpoints, else log_fork")
@click.option("--witness-checkpoint", "witness_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="a checkpoint of this log as a witness cosigned it (a file; repeatable): "
                   "two roots for one size are log_fork")
@click.option("--all-anchors", is_flag=True,
              help="ask the chain for every anchor of this log in a block range and check "
                   "the bundle against each one (one request per block)")
@click.option("--from-block", type=click.IntRange(0), default=None,
              help="--all-anchors: first block to read (default: the lowest block of the "
                   "bundle's anchors)")
@click.option("--to-block", type=click.IntRange(0), default=None,
              help="--all-anchors: last block to read (default: the head)")
@click.option("--scan-blocks", type=click.IntRange(1, 10_000_000), default=10_000,
              show_default=True, help="--all-anchors: most blocks read in one verification")
@click.option("--scan-seconds", type=click.FloatRange(0, 7 * 86400), default=3600.0,
              show_default=True,
              help="--all-anchors: most seconds one node's scan may take; a scan cut short "
                   "says the block to go on from")
def verify_command(bundles: tuple[Path, ...], nodes: tuple[str, ...], chain: str | None,
                   log_keys: tuple[str, ...], offline: bool, as_json: bool, report: Path | None,
                   pdf: bool, influx_url: str | None, database: str, influx_user: str | None,
                   influx_password_file: Path | None, known: tuple[Path, ...],
                   save_checkpoint: Path | None, strict: bool, require_complete: bool,
                   max_size: int, workers: int | None, policy_file: Path | None,
                   require_quorum: bool, mirrors: tuple[str, ...],
                   witness_files: tuple[Path, ...], all_anchors: bool, from_block: int | None,
                   to_block: int | None, scan_blocks: int, scan_seconds: float) -> None:
    """Verify evidence bundles without trusting the farm, the operator or fieldproof.

    Several BUNDLES (one per collector's log) are each verified on their own and then as one
    history: gaps over their union, messages two logs hold, conflicts, scopes, keys."""
    from inspector.verify import UsageError, VerifyOptions, check_against_influx, verify_bundle

    datas = []
    for bundle in bundles:
        try:
            with open(bundle, "rb") as f:
                datas.append(f.read(max_size + 1))  # one byte over is enough to refuse it
        except OSError as exc:
            raise click.UsageError(f"cannot read {bundle}: {exc.strerror}") from None
    notes = [read_small(p, "--known-checkpoint") for p in known]
    auth = _influx_auth(influx_user, influx_password_file) if influx_url else None
    outside = _outside_options(len(bundles), log_keys, offline, policy_file, require_quorum,
                               mirrors, witness_files, all_anchors, from_block, to_block,
                               scan_blocks, scan_seconds)
    opts = VerifyOptions(workers=workers, limits=Limits(max_bytes=max_size),
                         require_complete=require_complete, **outside)
    if len(bundles) > 1:
        _verify_several(bundles, datas, nodes, chain, log_keys, offline, opts, notes,
                        influx_url, database, auth, report, pdf, save_checkpoint, as_json,
                        strict)
        return
    try:
        if len(log_keys) > 1:
            from inspector.multi import verify_bundles

            result = _as_single(verify_bundles(
                list(zip(_labels(bundles), datas, strict=True)), nodes=list(nodes),
                chain=chain, offline=offline, log_keys=log_keys, options=opts,
                known_checkpoints=notes))
        else:
            result = verify_bundle(datas[0], nodes=list(nodes), chain=chain, offline=offline,
                                   log_key=log_keys[0] if log_keys else None, options=opts,
                                   known_checkpoints=notes)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if influx_url:
        check_against_influx(result, influx_url, database, auth=auth)
    if report is not None:
        _write_report(result, report, pdf)
    if save_checkpoint is not None:
        _save_checkpoint(result, save_checkpoint)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(_human(result))
    if result.verdict == "fail" or (strict and result.verdict == "warn"):
        sys.exit(1)


def _outside_options(bundles: int, log_keys: tuple[str, ...], offline: bool,
                     policy_file: Path | None, require_quorum: bool, mirrors: tuple[str, ...],
                     witness_files: tuple[Path, ...], all_anchors: bool,
                     from_block: int | None, to_block: int | None,
                     scan_blocks: int, scan_seconds: float) -> dict[str, Any]:
    """The trust policy, outside views and chain scan as options, or a usage error: they
    describe one log, so they go with one bundle and at most one --log-key."""
    asked = [name for name, on in (("--policy", policy_file is not None),
                                   ("--mirror", bool(mirrors)),
                                   ("--witness-checkpoint", bool(witness_files)),
                                   ("--all-anchors", all_anchors)) if on]
    if asked and (bundles > 1 or len(log_keys) > 1):
        raise click.UsageError(f"{', '.join(asked)} describe one log: verify each log's bundle "
                               "on its own with them")
    if require_quorum and policy_file is None:
        raise click.UsageError("--require-quorum needs --policy FILE")
    if all_anchors and offline:
        raise click.UsageError("--all-anchors asks the chain: drop --offline, give --node URL")
    if not all_anchors and (from_block is not None or to_block is not None):
        raise click.UsageError("--from-block and --to-block go with --all-anchors")
    if from_block is not None and to_block is not None and to_block < from_block:
        raise click.UsageError(f"--to-block {to_block} is below --from-block {from_block}")
    out: dict[str, Any] = {"mirrors": mirrors, "require_quorum": require_quorum,
                           "witness_checkpoints": tuple(
                               (str(p), read_small(p, "--witness-checkpoint"))
                               for p in witness_files)}
    if policy_file is not None:
        out["policy"] = _read_policy(policy_file, log_keys)
    if all_anchors:
        from inspector.anchor_scan import ScanRange

        out["all_anchors"] = ScanRange(from_block, to_block, scan_blocks, scan_seconds)
    return out


def _read_policy(path: Path, log_keys: tuple[str, ...]) -> Policy:
    """The --policy file, parsed; a --log-key given beside it must be one of its logs."""
    from inspector.policy import MAX_POLICY_BYTES, Policy, PolicyError
    from inspector.verify import UsageError, parse_log_key

    try:
        with open(path, "rb") as f:
            policy = Policy.parse(f.read(MAX_POLICY_BYTES + 1))
    except OSError as exc:
        raise click.UsageError(f"--policy: cannot read {path}: {exc.strerror}") from None
    except PolicyError as exc:
        raise click.UsageError(f"--policy {path}: {exc}") from None
    for key in log_keys:
        try:
            pinned = parse_log_key(key)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        if all(e.public_key != pinned.public_key for e in policy.logs):
            raise click.UsageError(f"--log-key {pinned.vkey} is not a log of --policy {path}: "
                                   "drop --log-key (the policy names the log's key) or fix "
                                   "the policy")
    return policy


def _write_report(result: VerificationResult | MultiResult, report: Path, pdf: bool) -> None:
    """The HTML report (and its PDF) of one or several bundles; exit 2 if it cannot be written."""
    from inspector.report import write_report

    try:
        files = write_report(result, report, pdf)
    except (OSError, RuntimeError) as exc:
        click.echo(f"error: could not write the report: {exc}", err=True)
        sys.exit(2)
    click.echo(f"report: {files.html}" + (f", {files.pdf} ({files.pdf_engine})"
                                          if files.pdf else ""), err=True)


def _verify_several(bundles: tuple[Path, ...], datas: list[bytes], nodes: tuple[str, ...],
                    chain: str | None, log_keys: tuple[str, ...], offline: bool,
                    opts: VerifyOptions, notes: list[bytes], influx_url: str | None,
                    database: str, auth: InfluxAuth | None, report: Path | None, pdf: bool,
                    save_checkpoint: Path | None, as_json: bool, strict: bool) -> None:
    """``verify A B …``: each bundle on its own, then together (inspector.multi)."""
    from inspector.multi import check_union_against_influx, verify_bundles
    from inspector.verify import UsageError

    try:
        multi = verify_bundles(list(zip(_labels(bundles), datas, strict=True)),
                               nodes=list(nodes), chain=chain, offline=offline,
                               log_keys=log_keys, options=opts, known_checkpoints=notes)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if influx_url:
        check_union_against_influx(multi, influx_url, database, auth=auth)
    if report is not None:
        _write_report(multi, report, pdf)
    if save_checkpoint is not None:
        if not multi.passed:
            click.echo(f"not saving checkpoints to {save_checkpoint}: the verification "
                       "failed", err=True)
        else:
            for n, b in enumerate(multi.bundles, 1):
                # one file per bundle: a --known-checkpoint file holds one log's checkpoint
                target = save_checkpoint.with_name(
                    f"{save_checkpoint.stem}.{n}{save_checkpoint.suffix}")
                click.echo(f"{b.label}:", err=True)
                _save_checkpoint(b.result, target)
    if as_json:
        click.echo(json.dumps(multi.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(_human_multi(multi))
    if multi.verdict == "fail" or (strict and multi.verdict == "warn"):
        sys.exit(1)


def _save_checkpoint(result: VerificationResult, path: Path) -> None:
    """Write the newest valid checkpoint that a verified anchor covers (the strongest one to
    hold the operator to next time) — only when the bundle passed."""
    if not result.passed:
        click.echo(f"not saving a checkpoint to {path}: the bundle failed", err=True)
        return
    usable = [c for c in result.checkpoints if c.valid and c.anchored and c.note]
    if not usable:
        click.echo(f"not saving a checkpoint to {path}: no valid anchored checkpoint in the "
                   "bundle", err=True)
        return
    write_atomic(path, usable[-1].note)
    click.echo(f"checkpoint of size {usable[-1].size} saved to {path}: pass it as "
               "--known-checkpoint when you verify this log's next bundle", err=True)
