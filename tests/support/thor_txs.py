"""One signed test transaction for ThorClient's tests, on the real node and on the double alike,
so both build the same tx and a difference between them is the node's, not the builder's."""

from __future__ import annotations

import secrets

from anchor import thor
from anchor.thor_client import ThorClient

#: the one clause's recipient: nobody's account, so no test spends from it
TO = b"\x77" * 20


def build_tx(
    client: ThorClient,
    *,
    key: thor.SecretKey,
    sponsor: thor.SecretKey | None = None,
    dynamic: bool = True,
    nonce: int | None = None,
    base_fee: int | None = None,
    **overrides: object,
) -> thor.Transaction:
    """A tx of one small clause to ``TO`` on the client's chain and best block, ``overrides``
    last. ``nonce`` None is a fresh random one (a real node refuses a tx it already knows);
    ``dynamic`` pays twice ``base_fee``, or twice the node's next base fee when None."""
    best = client.best_block()
    clause = thor.Clause(TO, 0, b"\x01\x02\x00")
    fields: dict[str, object] = {
        "chain_tag": client.chain_tag(),
        "block_ref": best.block_ref,
        "expiration": 32,
        "clauses": (clause,),
        "gas": thor.intrinsic_gas([clause]),
        "nonce": secrets.randbits(64) if nonce is None else nonce,
    }
    if dynamic:
        base = client.next_base_fee() if base_fee is None else base_fee
        assert base is not None, "the node reports no base fee"
        fields.update(tx_type=0x51, max_fee_per_gas=2 * base, max_priority_fee_per_gas=10**11)
    fields.update(overrides)
    tx = thor.Transaction(**fields)  # type: ignore[arg-type]
    return thor.sign_transaction(
        tx, key.secret_bytes(), None if sponsor is None else sponsor.secret_bytes()
    )
