locals {
  # Key schemas copied from infra/local/src/provision.rs `table_specs` (the local
  # stack's provisioning, which the code's tests run against): the same attribute
  # names and types, the same indexes (projection ALL), the same TTL attributes.
  specs = {
    # Event store: a conditional put on (aggregate_id, version) is the optimistic
    # concurrency check; `pending` is the outbox's sparse index.
    events_table = {
      hash  = { name = "aggregate_id", type = "S" }
      range = { name = "version", type = "N" }
      gsis = [{
        name  = "pending"
        hash  = { name = "pending_bucket", type = "S" }
        range = { name = "appended_at", type = "S" }
      }]
      ttl = null
    }
    # Consumer leases (KCL-compatible attribute names).
    leases_table = {
      hash  = { name = "leaseKey", type = "S" }
      range = null
      gsis  = []
      ttl   = null
    }
    # Poison records: pk the application, sk shard#position.
    parked_table = {
      hash  = { name = "application", type = "S" }
      range = { name = "position", type = "S" }
      gsis  = []
      ttl   = null
    }
    # Orders in flight; finished orders stay as tombstones until expires_at.
    active_orders_table = {
      hash  = { name = "order_id", type = "S" }
      range = null
      gsis = [{
        name  = "by-customer"
        hash  = { name = "customer_id", type = "S" }
        range = { name = "created_at", type = "S" }
      }]
      ttl = "expires_at"
    }
    # Replays (pk the replay id, sk `meta` or `segment#NNNN`) and the serving pointers.
    replays_table = {
      hash  = { name = "replay_id", type = "S" }
      range = { name = "part", type = "S" }
      gsis  = []
      ttl   = null
    }
    # Command idempotency records, expiring at expires_at (epoch seconds).
    idempotency_table = {
      hash  = { name = "idempotency_key", type = "S" }
      range = null
      gsis  = []
      ttl   = "expires_at"
    }
  }

  # Every key attribute of the table and its indexes, once (DynamoDB refuses duplicates
  # and attributes that key nothing).
  attributes = {
    for k, spec in local.specs : k => {
      for a in concat(
        [spec.hash],
        spec.range == null ? [] : [spec.range],
        flatten([for g in spec.gsis : concat([g.hash], g.range == null ? [] : [g.range])]),
      ) : a.name => a.type...
    }
  }
}

resource "aws_dynamodb_table" "this" {
  for_each = local.specs

  name         = var.names[each.key]
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = each.value.hash.name
  range_key    = each.value.range == null ? null : each.value.range.name

  # Every table is protected, not only the event store: leases hold the consumers'
  # checkpoints, parked the poison records, replays the serving pointers, idempotency
  # the payment and command claims (losing it could charge twice). The read model
  # (active orders) could be rebuilt, but a rebuild is a replay, not a redeploy.
  deletion_protection_enabled = var.deletion_protection

  dynamic "attribute" {
    for_each = local.attributes[each.key]

    content {
      name = attribute.key
      type = attribute.value[0]
    }
  }

  dynamic "global_secondary_index" {
    for_each = each.value.gsis

    content {
      name            = global_secondary_index.value.name
      hash_key        = global_secondary_index.value.hash.name
      range_key       = global_secondary_index.value.range == null ? null : global_secondary_index.value.range.name
      projection_type = "ALL"
    }
  }

  dynamic "ttl" {
    for_each = each.value.ttl == null ? [] : [each.value.ttl]

    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}
