locals {
  # infra/names.json is the one place resource names live: the Rust binaries, the local
  # stack and this configuration all read it, so a rename is one edit.
  names  = jsondecode(file("${path.module}/../names.json"))
  region = coalesce(var.region, local.names.region)

  # names.json keys that name an account-level resource and therefore take the prefix.
  # Database names, the metrics namespace and the region live inside other resources
  # (or are not names), so they stay as the file says.
  prefixed_name_keys = [
    "stream",
    "events_table",
    "leases_table",
    "parked_table",
    "active_orders_table",
    "idempotency_table",
    "replays_table",
    "payments_queue",
    "payments_dlq",
  ]
  resource_names = { for k in local.prefixed_name_keys : k => "${var.name_prefix}${local.names[k]}" }

  table_keys = ["events_table", "leases_table", "parked_table", "active_orders_table", "idempotency_table", "replays_table"]

  function_names = {
    api       = "${var.name_prefix}cafe-lambda-api"
    payment   = "${var.name_prefix}cafe-lambda-payment"
    projector = "${var.name_prefix}cafe-lambda-projector"
  }

  worker_cluster_name   = "${var.name_prefix}cafe-workers"
  worker_log_group_name = "/ecs/${var.name_prefix}cafe-workers"
  redshift_workgroup    = "${var.name_prefix}cafe-analytics"

  # What every `cafe consume` service reads: the stream and its leases, the parking
  # lot, the serving pointers, the metrics namespace.
  worker_environment = {
    CAFE_STREAM            = module.stream.stream_name
    CAFE_LEASES_TABLE      = module.tables.names["leases_table"]
    CAFE_PARKED_TABLE      = module.tables.names["parked_table"]
    CAFE_REPLAYS_TABLE     = module.tables.names["replays_table"]
    CAFE_METRICS_NAMESPACE = local.names.metrics_namespace
  }

  # The ECS services: one `cafe consume` per consumer application. The environment and
  # secrets below are the deployment contract the binaries check at start
  # (infra/settings/src/units.rs); their names are spelled out per application so the
  # contract can be read, and tested, from this block alone.
  workers = {
    orders = {
      command     = ["consume", "--aws", "--application", "orders", "--sink", "projector:orders"]
      environment = local.worker_environment
      secrets = {
        CAFE_POSTGRES_URL = module.databases.postgres_url_secret_arn
      }
    }
    active_orders = {
      command = ["consume", "--aws", "--application", "active_orders", "--sink", "projector:active_orders"]
      environment = merge(local.worker_environment, {
        CAFE_ACTIVE_ORDERS_TABLE = module.tables.names["active_orders_table"]
      })
      secrets = {}
    }
    documents = {
      command     = ["consume", "--aws", "--application", "documents", "--sink", "projector:documents"]
      environment = local.worker_environment
      secrets = {
        CAFE_MONGO_URL = module.databases.mongo_url_secret_arn
      }
    }
    cache = {
      command     = ["consume", "--aws", "--application", "cache", "--sink", "projector:cache"]
      environment = local.worker_environment
      secrets = {
        CAFE_REDIS_URL = module.databases.redis_url_secret_arn
      }
    }
    inventory = {
      command     = ["consume", "--aws", "--application", "inventory", "--sink", "projector:inventory"]
      environment = local.worker_environment
      secrets = {
        CAFE_MEMORYDB_URL = module.databases.memorydb_url_secret_arn
      }
    }
    analytics = {
      command = ["consume", "--aws", "--application", "analytics", "--sink", "projector:analytics"]
      environment = merge(local.worker_environment, {
        CAFE_REDSHIFT_WORKGROUP  = module.databases.redshift_workgroup_name
        CAFE_REDSHIFT_DATABASE   = module.databases.redshift_database
        CAFE_REDSHIFT_SECRET_ARN = module.databases.redshift_admin_secret_arn
      })
      secrets = {}
    }
    # The outbox relay: the API function publishes its own events; those whose publish
    # failed stay marked pending, and this one task publishes them. One is enough (two
    # would publish the same events twice), so it does not scale.
    relay = {
      command = ["relay", "--aws"]
      environment = {
        CAFE_EVENTS_TABLE = module.tables.names["events_table"]
        CAFE_STREAM       = module.stream.stream_name
      }
      secrets = {}
    }
    payment-requests = {
      command = ["consume", "--aws", "--application", "payment-requests", "--sink", "payment-requests"]
      environment = merge(local.worker_environment, {
        CAFE_PAYMENTS_QUEUE = module.queues.payments_queue_name
      })
      secrets = {}
    }
  }

  # The projector function, when deployed, is the analytics consumer: running the ECS
  # analytics worker as well would load the same warehouse twice.
  worker_applications = sort([for app in keys(local.workers) : app if !(app == "analytics" && var.projector_function)])

  # Fan-out applications read through the consumer Terraform registered (the worker's
  # `--fan-out` finds it registered); the others poll.
  workers_deployed = {
    for app in local.worker_applications : app => merge(local.workers[app], {
      command   = concat(local.workers[app].command, contains(var.fan_out_consumers, app) ? ["--fan-out", app] : [])
      min_count = app == "relay" ? 1 : lookup(var.worker_count_by_application, app, var.worker_count)
      autoscale = app != "relay"
    })
  }

  # A worker without a lease does nothing, so more tasks than shards is waste. On-demand
  # streams reshard themselves; there the variable alone bounds the count.
  worker_max_count = var.kinesis_mode == "PROVISIONED" ? min(var.worker_max_count, var.kinesis_shards) : var.worker_max_count
}

module "kms" {
  source = "./modules/kms"

  name_prefix = var.name_prefix
}

module "network" {
  source = "./modules/network"

  name_prefix        = var.name_prefix
  vpc_cidr           = var.vpc_cidr
  az_count           = var.az_count
  availability_zones = var.availability_zones
  log_kms_key_arn    = module.kms.key_arns["logs"]
  log_retention_days = var.log_retention_days
}

module "stream" {
  source = "./modules/stream"

  name              = local.resource_names["stream"]
  mode              = var.kinesis_mode
  shard_count       = var.kinesis_shards
  retention_hours   = var.kinesis_retention_hours
  kms_key_arn       = module.kms.key_arns["pipeline"]
  fan_out_consumers = var.fan_out_consumers
}

module "tables" {
  source = "./modules/tables"

  names               = { for k in local.table_keys : k => local.resource_names[k] }
  kms_key_arn         = module.kms.key_arns["pipeline"]
  deletion_protection = var.deletion_protection
}

module "queues" {
  source = "./modules/queues"

  payments_queue_name           = local.resource_names["payments_queue"]
  payments_dlq_name             = local.resource_names["payments_dlq"]
  max_receive_count             = local.names.payments_max_receive_count
  payment_timeout_seconds       = var.payment_timeout_seconds
  projector_failures_queue_name = var.projector_function ? "${var.name_prefix}projector-failures" : null
  kms_key_arn                   = module.kms.key_arns["pipeline"]
}

module "databases" {
  source = "./modules/databases"

  name_prefix         = var.name_prefix
  deletion_protection = var.deletion_protection
  subnet_ids          = module.network.private_subnet_ids
  security_group_ids  = module.network.security_group_ids
  stores_kms_key_arn  = module.kms.key_arns["stores"]
  secrets_kms_key_arn = module.kms.key_arns["secrets"]
  logs_kms_key_arn    = module.kms.key_arns["logs"]
  log_retention_days  = var.log_retention_days

  orders_database    = local.names.orders_database
  documents_database = local.names.documents_database
  analytics_database = local.names.analytics_database

  aurora_min_acu        = var.aurora_min_acu
  aurora_max_acu        = var.aurora_max_acu
  aurora_reader_count   = var.aurora_reader_count
  docdb_instance_class  = var.docdb_instance_class
  docdb_instance_count  = var.docdb_instance_count
  elasticache_node_type = var.elasticache_node_type
  memorydb_node_type    = var.memorydb_node_type
  memorydb_shards       = var.memorydb_shards
  redshift_workgroup    = local.redshift_workgroup
  redshift_base_rpu     = var.redshift_base_rpu
}

module "iam" {
  source = "./modules/iam"

  name_prefix          = var.name_prefix
  table_arns           = module.tables.arns
  stream_arn           = module.stream.stream_arn
  stream_consumer_arns = module.stream.consumer_arns
  payments_queue_arn   = module.queues.payments_queue_arn

  projector_function           = var.projector_function
  projector_failures_queue_arn = module.queues.projector_failures_queue_arn

  kms_key_arns              = module.kms.key_arns
  redshift_workgroup_arn    = module.databases.redshift_workgroup_arn
  redshift_admin_secret_arn = module.databases.redshift_admin_secret_arn
  worker_secret_arns        = module.databases.url_secret_arns
  worker_image              = var.worker_image
  worker_applications       = local.worker_applications
  worker_log_group_name     = local.worker_log_group_name
  function_names            = local.function_names
  metrics_namespace         = local.names.metrics_namespace
}

module "lambdas" {
  source = "./modules/lambdas"

  function_names           = local.function_names
  artifacts_dir            = var.lambda_artifacts_dir
  architecture             = var.lambda_architecture
  role_arns                = module.iam.function_role_arns
  env_kms_key_arn          = module.kms.key_arns["functions"]
  logs_kms_key_arn         = module.kms.key_arns["logs"]
  log_retention_days       = var.log_retention_days
  api_name                 = "${var.name_prefix}cafe-api"
  api_reserved_concurrency = var.api_reserved_concurrency
  api_throttle_rate        = var.api_throttle_rate
  api_throttle_burst       = var.api_throttle_burst
  jwt_issuer               = var.jwt_issuer
  jwt_audience             = var.jwt_audience

  payment_timeout_seconds         = var.payment_timeout_seconds
  payment_batch_size              = var.payment_batch_size
  payment_batching_window_seconds = var.payment_batching_window_seconds
  payment_max_concurrency         = var.payment_max_concurrency
  payments_queue_arn              = module.queues.payments_queue_arn

  projector_function                   = var.projector_function
  projector_event_source_arn           = lookup(module.stream.consumer_arns, "analytics", module.stream.stream_arn)
  projector_failures_queue_arn         = module.queues.projector_failures_queue_arn
  projector_batch_size                 = var.projector_batch_size
  projector_parallelization_factor     = var.projector_parallelization_factor
  projector_maximum_retry_attempts     = var.projector_maximum_retry_attempts
  projector_maximum_record_age_seconds = var.projector_maximum_record_age_seconds
  projector_reserved_concurrency       = var.projector_reserved_concurrency

  # The environment contract of each function (infra/settings/src/units.rs).
  api_environment = {
    CAFE_EVENTS_TABLE      = module.tables.names["events_table"]
    CAFE_IDEMPOTENCY_TABLE = module.tables.names["idempotency_table"]
    CAFE_STREAM            = module.stream.stream_name
  }
  payment_environment = {
    CAFE_EVENTS_TABLE      = module.tables.names["events_table"]
    CAFE_IDEMPOTENCY_TABLE = module.tables.names["idempotency_table"]
    CAFE_STREAM            = module.stream.stream_name
    CAFE_METRICS_NAMESPACE = local.names.metrics_namespace
    # The claim must outlive an invocation, or a retry could charge while the first
    # attempt still runs.
    CAFE_IDEMPOTENCY_LEASE_SECS = tostring(var.payment_timeout_seconds + 30)
  }
  projector_environment = {
    CAFE_APPLICATION         = "analytics"
    CAFE_PROJECTION          = "analytics"
    CAFE_METRICS_NAMESPACE   = local.names.metrics_namespace
    CAFE_PARKED_TABLE        = module.tables.names["parked_table"]
    CAFE_REDSHIFT_WORKGROUP  = module.databases.redshift_workgroup_name
    CAFE_REDSHIFT_DATABASE   = module.databases.redshift_database
    CAFE_REDSHIFT_SECRET_ARN = module.databases.redshift_admin_secret_arn
    CAFE_ANALYTICS_SCHEMA    = "analytics"
  }
}

module "workers" {
  source = "./modules/workers"

  cluster_name       = local.worker_cluster_name
  name_prefix        = var.name_prefix
  applications       = local.workers_deployed
  max_count          = local.worker_max_count
  image              = var.worker_image
  cpu                = var.worker_cpu
  memory             = var.worker_memory
  cpu_architecture   = var.worker_architecture
  subnet_ids         = module.network.private_subnet_ids
  security_group_id  = module.network.security_group_ids["workers"]
  execution_role_arn = module.iam.ecs_execution_role_arn
  task_role_arns     = module.iam.worker_role_arns
  log_group_name     = local.worker_log_group_name
  logs_kms_key_arn   = module.kms.key_arns["logs"]
  log_retention_days = var.log_retention_days
  region             = local.region
  metrics_namespace  = local.names.metrics_namespace
  stream_name        = module.stream.stream_name
  lag_target_seconds = var.worker_lag_target_seconds
}

module "observability" {
  source = "./modules/observability"

  name_prefix        = var.name_prefix
  region             = local.region
  cloudwatch_dir     = "${path.module}/../cloudwatch"
  api_id             = module.lambdas.api_id
  alarms_kms_key_arn = module.kms.key_arns["alarms"]
  alarm_email        = var.alarm_email

  # Names as the generated files spell them (names.json) → as deployed here.
  renames = {
    Stream       = { (local.names.stream) = module.stream.stream_name }
    StreamName   = { (local.names.stream) = module.stream.stream_name }
    QueueName    = { (local.names.payments_queue) = module.queues.payments_queue_name, (local.names.payments_dlq) = module.queues.payments_dlq_name }
    FunctionName = { for k, v in local.function_names : "cafe-lambda-${k}" => v }
  }
}
