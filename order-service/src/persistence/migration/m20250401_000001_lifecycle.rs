//! The order lifecycle: payment deadline and reference on the order, the
//! payments ledger, and the outbox that makes every transition's event
//! as durable as the transition itself.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE orders
    ADD COLUMN expires_at   TIMESTAMPTZ,
    ADD COLUMN amount_cents BIGINT NOT NULL DEFAULT 0 CHECK (amount_cents >= 0),
    ADD COLUMN payment_ref  TEXT,
    ADD COLUMN paid_at      TIMESTAMPTZ,
    ADD CONSTRAINT orders_paid_check
        CHECK ((status = 'paid') = (payment_ref IS NOT NULL AND paid_at IS NOT NULL));
-- Orders created before payment existed get the default window.
UPDATE orders SET expires_at = created_at + interval '15 minutes' WHERE status = 'created';
ALTER TABLE orders ADD CONSTRAINT orders_deadline_check
    CHECK (status <> 'created' OR expires_at IS NOT NULL);
-- The expiry worker's scan: unpaid orders by deadline, nothing else.
CREATE INDEX orders_expiry_idx ON orders (expires_at) WHERE status = 'created';

CREATE TABLE payments (
    id              BIGSERIAL   PRIMARY KEY,
    order_id        TEXT        NOT NULL REFERENCES orders (order_id),
    idempotency_key TEXT        NOT NULL,
    amount_cents    BIGINT      NOT NULL CHECK (amount_cents >= 0),
    status          TEXT        NOT NULL CHECK (status IN
                    ('pending', 'succeeded', 'declined', 'refund_pending', 'refunded')),
    payment_ref     TEXT,
    decline_reason  TEXT,
    -- The answer every repeat of this request gets, once the attempt is final.
    response_status SMALLINT,
    response_body   JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (order_id, idempotency_key),
    CHECK (status IN ('pending', 'declined') OR payment_ref IS NOT NULL)
);
-- Money is kept at most once per order, whatever the clients send.
CREATE UNIQUE INDEX payments_one_success ON payments (order_id) WHERE status = 'succeeded';
CREATE INDEX payments_refund_due ON payments (updated_at) WHERE status = 'refund_pending';

-- Events of committed transitions, written in the transition's transaction
-- and deleted by the relay once the broker acknowledged them.
CREATE TABLE outbox (
    id         BIGSERIAL   PRIMARY KEY,
    topic      TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS payments;
DROP INDEX IF EXISTS orders_expiry_idx;
ALTER TABLE orders
    DROP CONSTRAINT IF EXISTS orders_deadline_check,
    DROP CONSTRAINT IF EXISTS orders_paid_check,
    DROP COLUMN IF EXISTS expires_at,
    DROP COLUMN IF EXISTS amount_cents,
    DROP COLUMN IF EXISTS payment_ref,
    DROP COLUMN IF EXISTS paid_at;
"#;

seckill_common::sql_migration!(Migration, UP, DOWN);
