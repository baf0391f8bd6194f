// Checks fieldproof's Thor anchor transactions (testdata/thor/*.tx) with the official VeChain
// SDK (@vechain/sdk-core): decode each raw transaction, recover its origin and VIP-191 sponsor
// (gas payer), recompute its signing hash, id and intrinsic gas, re-encode it, and read the
// 78-byte anchor record (docs/anchor-record.md §1) from its clause; everything must equal the
// sidecar <name>.expected.json and the signed checkpoint the record names.
//
//   node check_thor.mjs TESTDATA_DIR [NAME ...]      (default names: legacy dynamic-fee delegated)
//
// Exit status: 0 all agree, 1 a mismatch (each printed as FAIL: ...), 2 usage or I/O error.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Transaction, fromTransactionType } from '@vechain/sdk-core';

const NAMES = ['legacy', 'dynamic-fee', 'delegated'];

const failures = [];
let oks = 0;
const fail = (msg) => {
  failures.push(msg);
  console.error(`FAIL: ${msg}`);
};

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const lower = (s) => (s === null || s === undefined ? s : String(s).toLowerCase());
const big = (v) => (v === null || v === undefined ? null : BigInt(v));

// docs/anchor-record.md §1: FPAN ‖ uint16 version ‖ uint64 size ‖ root(32) ‖ SHA-256(origin)(32)
function parseRecord(b) {
  if (b.length !== 78) throw new Error(`anchor record is ${b.length} bytes, not 78`);
  if (b.subarray(0, 4).toString('ascii') !== 'FPAN') throw new Error('anchor record magic is not FPAN');
  const version = b.readUInt16BE(4);
  if (version !== 1) throw new Error(`anchor record version ${version} is not 1`);
  return {
    tree_size: b.readBigUInt64BE(6),
    root_hash: hex(b.subarray(14, 46)),
    origin_hash: hex(b.subarray(46, 78)),
  };
}

// the body of a C2SP checkpoint note: origin, size, base64 root (its signature is the Go
// checker's business)
function checkpointBody(note) {
  const [origin, size, root] = note.toString('utf8').split('\n');
  return { origin, size: BigInt(size), root_hash: hex(Buffer.from(root, 'base64')) };
}

function compare(name, what, got, want) {
  if (got !== want) {
    fail(`thor/${name}.tx: ${what} is ${got}, expected ${want}`);
    return false;
  }
  return true;
}

function checkOne(dir, name) {
  const exp = JSON.parse(readFileSync(join(dir, 'thor', `${name}.expected.json`), 'utf8'));
  const raw = readFileSync(join(dir, 'thor', `${name}.tx`));
  let tx;
  try {
    tx = Transaction.decode(new Uint8Array(raw), true);
  } catch (e) {
    fail(`thor/${name}.tx: @vechain/sdk-core cannot decode it: ${e.message.split('\n')[0]}`);
    return;
  }
  const b = tx.body;
  let ok = true;
  const c = (what, got, want) => {
    ok = compare(name, what, got, want) && ok;
  };
  try {
    c('type', fromTransactionType(tx.transactionType), exp.type);
    c('re-encoding', hex(tx.encoded), exp.raw);
    c('chainTag', b.chainTag, exp.chain_tag);
    c('blockRef', lower(b.blockRef), exp.block_ref);
    c('expiration', b.expiration, exp.expiration);
    c('gas', big(b.gas), BigInt(exp.gas));
    c('intrinsic gas', Transaction.intrinsicGas(b.clauses).wei, BigInt(exp.gas));
    c('dependsOn', b.dependsOn, exp.depends_on);
    c('nonce', big(b.nonce), BigInt(exp.nonce));
    if (exp.type === 0) {
      c('gasPriceCoef', b.gasPriceCoef, exp.gas_price_coef);
    } else {
      c('maxFeePerGas', big(b.maxFeePerGas), BigInt(exp.max_fee_per_gas));
      c('maxPriorityFeePerGas', big(b.maxPriorityFeePerGas), BigInt(exp.max_priority_fee_per_gas));
    }
    c('reserved.features', b.reserved?.features ?? 0, exp.features);
    c('clause count', b.clauses.length, exp.clauses.length);
    c('clause to', lower(b.clauses[0].to), exp.clauses[0].to);
    c('clause value', big(b.clauses[0].value), BigInt(exp.clauses[0].value));
    c('clause data', lower(b.clauses[0].data), exp.clauses[0].data);
    c('signing hash', tx.getTransactionHash().toString(), exp.signing_hash);
    c('isSigned', tx.isSigned, true);
    c('isDelegated', tx.isDelegated, exp.delegated);
    c('origin', lower(tx.origin.toString()), exp.origin);
    c('id', lower(tx.id.toString()), exp.id);
    if (exp.delegated) {
      c('delegator (gas payer)', lower(tx.gasPayer.toString()), exp.delegator);
      // what the sponsor signed: blake2b256(signing hash ‖ origin), which is also the id
      c('gas payer hash', lower(tx.getTransactionHash(tx.origin).toString()), exp.id);
    } else {
      c('delegator', exp.delegator, null);
    }
  } catch (e) {
    fail(`thor/${name}.tx: @vechain/sdk-core failed on it: ${e.message.split('\n')[0]}`);
    return;
  }

  // the anchor record in the clause, against the sidecar and the checkpoint it names
  let rec;
  try {
    rec = parseRecord(Buffer.from(b.clauses[0].data.slice(2), 'hex'));
  } catch (e) {
    fail(`thor/${name}.tx: clause data: ${e.message}`);
    return;
  }
  const want = exp.record;
  const originHash = createHash('sha256').update(want.origin, 'utf8').digest('hex');
  c('record tree size', rec.tree_size, BigInt(want.tree_size));
  c('record root hash', rec.root_hash, want.root_hash);
  c('record origin hash', rec.origin_hash, want.origin_hash);
  c('SHA-256(origin)', rec.origin_hash, originHash);
  const cp = checkpointBody(readFileSync(join(dir, want.checkpoint)));
  c(`record vs ${want.checkpoint} origin`, cp.origin, want.origin);
  c(`record vs ${want.checkpoint} size`, rec.tree_size, cp.size);
  c(`record vs ${want.checkpoint} root`, rec.root_hash, cp.root_hash);
  if (ok) {
    oks++;
    const who = exp.delegated ? `origin ${exp.origin}, sponsor ${exp.delegator}` : `origin ${exp.origin}`;
    console.log(`ok: thor/${name}.tx (${tx.transactionType}): id ${exp.id}, ${who}, ` +
      `record size ${rec.tree_size} root ${rec.root_hash.slice(0, 12)}… = ${want.checkpoint}`);
  }
}

const [dir, ...names] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node check_thor.mjs TESTDATA_DIR [NAME ...]');
  process.exit(2);
}
try {
  for (const name of names.length ? names : NAMES) checkOne(dir, name);
} catch (e) {
  console.error(`check_thor: ${e.message}`);
  process.exit(2);
}
if (failures.length) {
  console.error(`check_thor: ${failures.length} mismatch(es), ${oks} transaction(s) agreed`);
  process.exit(1);
}
console.log(`check_thor: all ${oks} transactions agree (@vechain/sdk-core)`);
