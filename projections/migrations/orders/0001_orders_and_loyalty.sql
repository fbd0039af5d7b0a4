-- Orders and loyalty, the Aurora PostgreSQL read model.
-- `orders` keeps the seed's columns (order_id, customer_id, store_id, total_amount,
-- status, created_at and the customer index); money is carried as integer cents and
-- total_amount is derived from it, so no rounding ever happens in SQL.
-- `version` is the aggregate version last applied: every write is guarded by it.

CREATE TABLE orders (
    order_id     VARCHAR(255) PRIMARY KEY,
    customer_id  VARCHAR(255) NOT NULL,
    store_id     VARCHAR(255) NOT NULL,
    total_cents  BIGINT NOT NULL,
    total_amount NUMERIC(14, 2) GENERATED ALWAYS AS (total_cents / 100.0) STORED,
    currency     VARCHAR(3) NOT NULL,
    status       VARCHAR(50) NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT NOT NULL
);
CREATE INDEX idx_customer_orders ON orders (customer_id, created_at);

CREATE TABLE order_items (
    order_id         VARCHAR(255) NOT NULL,
    line_no          INTEGER NOT NULL,
    item_id          VARCHAR(255) NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE loyalty_accounts (
    customer_id VARCHAR(255) PRIMARY KEY,
    balance     BIGINT NOT NULL CHECK (balance >= 0),
    tier        VARCHAR(20) NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT NOT NULL
);

-- One row per points movement, keyed by the account's version: insert-only.
CREATE TABLE loyalty_ledger (
    customer_id   VARCHAR(255) NOT NULL,
    version       BIGINT NOT NULL,
    event_id      UUID NOT NULL,
    kind          VARCHAR(20) NOT NULL,
    points        BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    order_id      VARCHAR(255),
    occurred_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (customer_id, version)
);

-- Where each projector stands on each shard, written in the same transaction as the
-- rows: a batch is either applied and recorded, or neither.
CREATE TABLE projection_checkpoints (
    projector    VARCHAR(100) NOT NULL,
    shard_id     VARCHAR(255) NOT NULL,
    sequence     NUMERIC(60, 0) NOT NULL,
    sub_sequence BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, shard_id)
);
