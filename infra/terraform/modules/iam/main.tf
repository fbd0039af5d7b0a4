data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
}

# =======================================================================================
# ACTIONS, one locals block per role: resource key => actions on it. The resource keys
# are resolved to ARNs (and conditions) in `local.resources` / `local.conditions` below.
# Replace a block as a whole to change what a role may do.
#
# DynamoDB's TransactWriteItems and SQS's SendMessageBatch have no IAM action of their
# own: they are authorised as the PutItem / SendMessage of each member.
# =======================================================================================

# ---- ACTIONS: api-function ------------------------------------------------------------
# cafe-lambda-api: the command service (producers/src/store/dynamo.rs, publish/kinesis.rs).
locals {
  actions_api_function = {
    # Query: load an aggregate; PutItem: the conditional appends (in a transaction);
    # BatchWriteItem: clearing the outbox markers.
    events_table = ["dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
    # GetItem: a replayed command's stored answer; PutItem: the claim (in the append transaction).
    idempotency_table = ["dynamodb:GetItem", "dynamodb:PutItem"]
    stream            = ["kinesis:PutRecords", "kinesis:ListShards"]
    pipeline_key      = ["kms:Decrypt", "kms:GenerateDataKey"]
    logs              = ["logs:CreateLogStream", "logs:PutLogEvents"]
    xray              = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
  }
}

# ---- ACTIONS: payment-function --------------------------------------------------------
# cafe-lambda-payment: SQS event source, idempotent charges (lambdas/payment/src/
# idempotency.rs), outcome events through the same command service as the API.
locals {
  actions_payment_function = {
    events_table = ["dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
    # Claim (conditional PutItem), complete (PutItem), release (DeleteItem), read (GetItem).
    idempotency_table = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
    stream            = ["kinesis:PutRecords", "kinesis:ListShards"]
    # The event source mapping polls with the function's role.
    payments_queue = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    pipeline_key   = ["kms:Decrypt", "kms:GenerateDataKey"]
    logs           = ["logs:CreateLogStream", "logs:PutLogEvents"]
    xray           = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
  }
}

# ---- ACTIONS: projector-function ------------------------------------------------------
# cafe-lambda-projector hosting the analytics facts (Redshift Data API), parking poison
# records; metrics go out as EMF log lines, so no PutMetricData.
locals {
  actions_projector_function = {
    # The Kinesis event source mapping reads with the function's role.
    stream = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
    ]
    stream_consumer          = ["kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"]
    parked_table             = ["dynamodb:PutItem"]
    projector_failures_queue = ["sqs:SendMessage"]
    redshift_workgroup       = ["redshift-data:BatchExecuteStatement"]
    redshift_statements      = ["redshift-data:DescribeStatement"]
    redshift_secret          = ["secretsmanager:GetSecretValue"]
    pipeline_key             = ["kms:Decrypt", "kms:GenerateDataKey"]
    secrets_key              = ["kms:Decrypt"]
    logs                     = ["logs:CreateLogStream", "logs:PutLogEvents"]
    xray                     = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
  }
}

# ---- ACTIONS: every worker, and worker-orders ------------------------------------------
# Every worker (`cafe consume`): shard discovery and reads (consumers/src/discovery.rs,
# retrieval.rs, fanout.rs), leases (lease/dynamo.rs: Scan, PutItem, UpdateItem), the
# parking lot (parking.rs: PutItem), the serving pointers (projections/src/serving.rs:
# GetItem on the replays table) and CloudWatch metrics. The store's URL comes as an ECS
# secret (execution role), so the task role needs nothing for it.
locals {
  actions_worker_common = {
    stream          = ["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]
    stream_fan_out  = ["kinesis:DescribeStreamSummary", "kinesis:RegisterStreamConsumer"]
    stream_consumer = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]
    leases_table    = ["dynamodb:Scan", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    parked_table    = ["dynamodb:PutItem"]
    replays_table   = ["dynamodb:GetItem"]
    pipeline_key    = ["kms:Decrypt", "kms:GenerateDataKey"]
    metrics         = ["cloudwatch:PutMetricData"]
  }
  actions_worker_orders = local.actions_worker_common
}

# ---- ACTIONS: worker-active_orders ----------------------------------------------------
# + the active orders table (projections/src/active_orders.rs: version-guarded UpdateItem).
# After a replay's swap the serving copy is a shadow table (`<table>-<replay>`), which
# the worker finds like the live one (DescribeTable, DescribeTimeToLive of the live one;
# CreateTable, answered "in use", and UpdateTimeToLive of the shadow) and writes to. The
# by-customer index is only queried by the read side.
locals {
  actions_worker_active_orders = merge(local.actions_worker_common, {
    active_orders_table   = ["dynamodb:UpdateItem", "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"]
    active_orders_shadows = ["dynamodb:UpdateItem", "dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:UpdateTimeToLive"]
  })
}

# ---- ACTIONS: worker-documents --------------------------------------------------------
locals {
  actions_worker_documents = local.actions_worker_common
}

# ---- ACTIONS: worker-cache ------------------------------------------------------------
locals {
  actions_worker_cache = local.actions_worker_common
}

# ---- ACTIONS: worker-inventory --------------------------------------------------------
locals {
  actions_worker_inventory = local.actions_worker_common
}

# ---- ACTIONS: worker-analytics --------------------------------------------------------
# + the Redshift Data API (projections/src/analytics/data_api.rs) with the admin secret.
locals {
  actions_worker_analytics = merge(local.actions_worker_common, {
    redshift_workgroup  = ["redshift-data:BatchExecuteStatement"]
    redshift_statements = ["redshift-data:DescribeStatement"]
    redshift_secret     = ["secretsmanager:GetSecretValue"]
    secrets_key         = ["kms:Decrypt"]
  })
}

# ---- ACTIONS: worker-payment-requests -------------------------------------------------
# + the payments queue (lambdas/payment/src/requests.rs: SendMessageBatch, and
# GetQueueAttributes for its backpressure gate; cli/src/payments.rs: GetQueueUrl).
locals {
  actions_worker_payment_requests = merge(local.actions_worker_common, {
    payments_queue = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"]
  })
}

# ---- ACTIONS: worker-relay ------------------------------------------------------------
# The outbox relay (producers/src/relay.rs over store/dynamo.rs): pending events from the
# events table's sparse `pending` index, published, their markers cleared (BatchWriteItem
# re-puts the events without it).
locals {
  actions_worker_relay = {
    events_pending_index = ["dynamodb:Query"]
    events_table         = ["dynamodb:BatchWriteItem"]
    stream               = ["kinesis:ListShards", "kinesis:PutRecords"]
    pipeline_key         = ["kms:Decrypt", "kms:GenerateDataKey"]
  }
}

# ---- ACTIONS: ecs-execution -----------------------------------------------------------
# What ECS itself does for every worker task: pull the image, read the URL secrets into
# the container's environment, ship the logs.
locals {
  actions_ecs_execution = {
    ecr_auth       = ["ecr:GetAuthorizationToken"]
    ecr_repository = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    worker_secrets = ["secretsmanager:GetSecretValue"]
    secrets_key    = ["kms:Decrypt"]
    worker_logs    = ["logs:CreateLogStream", "logs:PutLogEvents"]
  }
}

# =======================================================================================

locals {
  actions = {
    "api-function"            = local.actions_api_function
    "payment-function"        = local.actions_payment_function
    "projector-function"      = local.actions_projector_function
    "worker-orders"           = local.actions_worker_orders
    "worker-active_orders"    = local.actions_worker_active_orders
    "worker-documents"        = local.actions_worker_documents
    "worker-cache"            = local.actions_worker_cache
    "worker-inventory"        = local.actions_worker_inventory
    "worker-analytics"        = local.actions_worker_analytics
    "worker-payment-requests" = local.actions_worker_payment_requests
    "worker-relay"            = local.actions_worker_relay
    "ecs-execution"           = local.actions_ecs_execution
  }

  function_roles = {
    api       = "api-function"
    payment   = "payment-function"
    projector = "projector-function"
  }

  roles = concat(
    ["api-function", "payment-function", "ecs-execution"],
    var.projector_function ? ["projector-function"] : [],
    [for app in var.worker_applications : "worker-${app}"],
  )

  # Who assumes each role.
  trusted_service = { for r in local.roles : r => startswith(r, "worker-") || r == "ecs-execution" ? "ecs-tasks.amazonaws.com" : "lambda.amazonaws.com" }

  log_group_arn = { for k, name in var.function_names : k => "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${name}" }

  ecr_image      = regex("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", var.worker_image)
  ecr_repository = "arn:${local.partition}:ecr:${local.ecr_image[1]}:${local.ecr_image[0]}:repository/${local.ecr_image[2]}"

  # Resource key => ARNs, shared by every role.
  resources = {
    events_table             = [var.table_arns["events_table"]]
    idempotency_table        = [var.table_arns["idempotency_table"]]
    leases_table             = [var.table_arns["leases_table"]]
    parked_table             = [var.table_arns["parked_table"]]
    replays_table            = [var.table_arns["replays_table"]]
    active_orders_table      = [var.table_arns["active_orders_table"]]
    active_orders_shadows    = ["${var.table_arns["active_orders_table"]}-*"]
    events_pending_index     = ["${var.table_arns["events_table"]}/index/pending"]
    stream                   = [var.stream_arn]
    payments_queue           = [var.payments_queue_arn]
    projector_failures_queue = var.projector_failures_queue_arn == null ? [] : [var.projector_failures_queue_arn]
    pipeline_key             = [var.kms_key_arns["pipeline"]]
    secrets_key              = [var.kms_key_arns["secrets"]]
    redshift_workgroup       = [var.redshift_workgroup_arn]
    redshift_secret          = [var.redshift_admin_secret_arn]
    worker_secrets           = var.worker_secret_arns
    worker_logs              = ["arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${var.worker_log_group_name}:*"]
    ecr_repository           = [local.ecr_repository]
    # No resource-level permissions exist for these: PutMetricData and X-Ray take no
    # resource, GetAuthorizationToken is account-wide, and the Data API's statement
    # reads are scoped by the condition below instead.
    metrics             = ["*"]
    xray                = ["*"]
    ecr_auth            = ["*"]
    redshift_statements = ["*"]
  }

  # What differs per role: its own log group, and its own fan-out consumer (empty, and
  # the statement dropped, when the application polls).
  consumer_application = merge(
    { for app in var.worker_applications : "worker-${app}" => app },
    { "projector-function" = "analytics" },
  )
  role_resources = {
    for r in local.roles : r => merge(local.resources, {
      logs            = [for k, role in local.function_roles : "${local.log_group_arn[k]}:*" if role == r]
      stream_consumer = compact([lookup(var.stream_consumer_arns, lookup(local.consumer_application, r, ""), "")])
      stream_fan_out  = contains(keys(var.stream_consumer_arns), lookup(local.consumer_application, r, "")) ? [var.stream_arn] : []
    })
  }

  kms_via = { for s in ["dynamodb", "kinesis", "sqs", "secretsmanager"] : s => "${s}.${local.region}.amazonaws.com" }

  conditions = {
    metrics = [{
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }]
    # Only the statements this role itself ran.
    redshift_statements = [{
      test     = "StringEquals"
      variable = "redshift-data:statement-owner-iam-userid"
      values   = ["$${aws:userid}"]
    }]
    pipeline_key = [{
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via.dynamodb, local.kms_via.kinesis, local.kms_via.sqs]
    }]
    secrets_key = [{
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via.secretsmanager]
    }]
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = toset(distinct(values(local.trusted_service)))

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = [each.key]
    }

    # ECS passes the account of the task it assumes the role for; refusing others
    # closes the confused-deputy path (Lambda does not pass one for execution roles).
    dynamic "condition" {
      for_each = each.key == "ecs-tasks.amazonaws.com" ? [1] : []

      content {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account]
      }
    }
  }
}

data "aws_iam_policy_document" "role" {
  for_each = toset(local.roles)

  dynamic "statement" {
    for_each = {
      for key, actions in local.actions[each.key] : key => actions
      if length(local.role_resources[each.key][key]) > 0
    }

    content {
      sid       = replace(title(replace(statement.key, "_", " ")), " ", "")
      actions   = statement.value
      resources = local.role_resources[each.key][statement.key]

      dynamic "condition" {
        for_each = lookup(local.conditions, statement.key, [])

        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = toset(local.roles)

  name               = "${var.name_prefix}cafe-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume[local.trusted_service[each.key]].json

  lifecycle {
    precondition {
      condition     = contains(keys(local.actions), each.key)
      error_message = "No ACTIONS block for role ${each.key}: add one to modules/iam/main.tf."
    }
  }
}

resource "aws_iam_role_policy" "this" {
  for_each = toset(local.roles)

  name   = "cafe-${each.key}"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.role[each.key].json
}
