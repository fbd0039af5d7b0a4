variable "region" {
  description = "AWS region. Null means infra/names.json's region, the one the code and the generated dashboard assume."
  type        = string
  default     = null

  validation {
    condition     = var.region == null || can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "environment" {
  description = "Environment name, used in tags (Environment) and nowhere in resource names: one environment per account is the recommended setup."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "name_prefix" {
  description = "Prefix for every resource name (tables, stream, queues, functions, ...). Empty by default; set it only to share an account between environments, e.g. \"staging-\"."
  type        = string
  default     = ""

  validation {
    condition     = var.name_prefix == "" || can(regex("^[a-z][a-z0-9-]{0,14}-$", var.name_prefix))
    error_message = "name_prefix must be empty or 2-16 lowercase characters ending with '-' (e.g. \"staging-\")."
  }
}

# ---------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /20 or larger."
  }
}

variable "az_count" {
  description = "Availability zones to spread the private subnets over (2-3). Keep 3 if you can: Redshift Serverless wants subnets in three AZs."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3 && floor(var.az_count) == var.az_count
    error_message = "az_count must be 2 or 3."
  }
}

# ---------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------

variable "kinesis_mode" {
  description = "Capacity mode of the event stream: ON_DEMAND or PROVISIONED."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.kinesis_mode)
    error_message = "kinesis_mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "kinesis_shards" {
  description = "Shard count when kinesis_mode is PROVISIONED (ignored otherwise). Also the cap on each worker service's task count: a worker holding no lease does nothing."
  type        = number
  default     = 4

  validation {
    condition     = var.kinesis_shards >= 1 && var.kinesis_shards <= 500 && floor(var.kinesis_shards) == var.kinesis_shards
    error_message = "kinesis_shards must be a whole number between 1 and 500."
  }
}

variable "kinesis_retention_hours" {
  description = "How long the stream keeps records (24-8760 hours). A week by default: the window in which a stopped consumer can catch up without a replay from the event store."
  type        = number
  default     = 168

  validation {
    condition     = var.kinesis_retention_hours >= 24 && var.kinesis_retention_hours <= 8760
    error_message = "kinesis_retention_hours must be between 24 and 8760."
  }
}

variable "fan_out_consumers" {
  description = "Applications that read by enhanced fan-out (a registered stream consumer each, a dedicated 2 MB/s per shard) instead of polling. Worker applications and/or \"analytics\" for the projector function."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for c in var.fan_out_consumers : contains(["orders", "active_orders", "documents", "cache", "inventory", "analytics", "payment-requests"], c)
    ])
    error_message = "fan_out_consumers may only name the applications: orders, active_orders, documents, cache, inventory, analytics, payment-requests."
  }

  validation {
    condition     = length(var.fan_out_consumers) == length(distinct(var.fan_out_consumers)) && length(var.fan_out_consumers) <= 20
    error_message = "fan_out_consumers must not repeat an application, and Kinesis allows at most 20 consumers per stream."
  }
}

# ---------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------

variable "projector_function" {
  description = "Deploy the optional Kinesis projector Lambda for the analytics facts. It then replaces the analytics ECS worker (both would load the same warehouse)."
  type        = bool
  default     = false
}

variable "lambda_artifacts_dir" {
  description = "Output of `cargo lambda build --release --output-format zip` (target/lambda/<binary>/bootstrap.zip), relative to infra/terraform or absolute."
  type        = string
  default     = "../../target/lambda"
}

variable "lambda_architecture" {
  description = "Instruction set of the function binaries: arm64 (cargo lambda build --arm64) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "api_reserved_concurrency" {
  description = "Reserved concurrency of the API function: a ceiling that keeps a traffic spike from starving the account's other functions."
  type        = number
  default     = 100

  validation {
    condition     = var.api_reserved_concurrency >= 1
    error_message = "api_reserved_concurrency must be at least 1."
  }
}

variable "payment_timeout_seconds" {
  description = "Timeout of the payment function. The queue's visibility timeout is 6 times this, and the idempotency lease this plus 30 s."
  type        = number
  default     = 30

  validation {
    condition     = var.payment_timeout_seconds >= 3 && var.payment_timeout_seconds <= 900
    error_message = "payment_timeout_seconds must be between 3 and 900 (and 6 times it at most 43200, the SQS maximum)."
  }
}

variable "payment_batch_size" {
  description = "Messages per payment function invocation (1-10000; above 10 needs a batching window)."
  type        = number
  default     = 10

  validation {
    condition     = var.payment_batch_size >= 1 && var.payment_batch_size <= 10000
    error_message = "payment_batch_size must be between 1 and 10000."
  }
}

variable "payment_batching_window_seconds" {
  description = "How long the event source mapping gathers messages before invoking (0-300 s)."
  type        = number
  default     = 1

  validation {
    condition     = var.payment_batching_window_seconds >= 0 && var.payment_batching_window_seconds <= 300
    error_message = "payment_batching_window_seconds must be between 0 and 300."
  }
}

variable "payment_max_concurrency" {
  description = "Maximum concurrent payment invocations the SQS event source mapping drives (2-1000); also the function's reserved concurrency."
  type        = number
  default     = 10

  validation {
    condition     = var.payment_max_concurrency >= 2 && var.payment_max_concurrency <= 1000
    error_message = "payment_max_concurrency must be between 2 and 1000."
  }
}

variable "projector_batch_size" {
  description = "Kinesis records per projector function invocation."
  type        = number
  default     = 500

  validation {
    condition     = var.projector_batch_size >= 1 && var.projector_batch_size <= 10000
    error_message = "projector_batch_size must be between 1 and 10000."
  }
}

variable "projector_parallelization_factor" {
  description = "Concurrent projector invocations per shard (1-10). Order is kept per partition key (aggregate) either way."
  type        = number
  default     = 1

  validation {
    condition     = var.projector_parallelization_factor >= 1 && var.projector_parallelization_factor <= 10
    error_message = "projector_parallelization_factor must be between 1 and 10."
  }
}

variable "projector_maximum_retry_attempts" {
  description = "Retries of a failing projector batch before it goes to the failure queue."
  type        = number
  default     = 10

  validation {
    condition     = var.projector_maximum_retry_attempts >= 0 && var.projector_maximum_retry_attempts <= 10000
    error_message = "projector_maximum_retry_attempts must be between 0 and 10000."
  }
}

variable "projector_maximum_record_age_seconds" {
  description = "Records older than this go to the failure queue instead of being processed (60-604800, or -1 for no limit)."
  type        = number
  default     = 3600

  validation {
    condition     = var.projector_maximum_record_age_seconds == -1 || (var.projector_maximum_record_age_seconds >= 60 && var.projector_maximum_record_age_seconds <= 604800)
    error_message = "projector_maximum_record_age_seconds must be -1 or between 60 and 604800."
  }
}

# ---------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------

variable "api_throttle_rate" {
  description = "Steady-state requests per second the HTTP API stage accepts."
  type        = number
  default     = 500

  validation {
    condition     = var.api_throttle_rate > 0
    error_message = "api_throttle_rate must be positive."
  }
}

variable "api_throttle_burst" {
  description = "Burst of requests the HTTP API stage accepts above the rate."
  type        = number
  default     = 1000

  validation {
    condition     = var.api_throttle_burst > 0 && floor(var.api_throttle_burst) == var.api_throttle_burst
    error_message = "api_throttle_burst must be a positive whole number."
  }
}

variable "jwt_issuer" {
  description = "Issuer (iss) of the bearer tokens the API's JWT authorizer accepts, an https URL serving /.well-known/openid-configuration."
  type        = string

  validation {
    condition     = startswith(var.jwt_issuer, "https://")
    error_message = "jwt_issuer must be an https URL."
  }
}

variable "jwt_audience" {
  description = "Accepted audiences (aud) of the bearer tokens."
  type        = list(string)

  validation {
    condition     = length(var.jwt_audience) >= 1
    error_message = "jwt_audience must name at least one audience."
  }
}

# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------

variable "worker_image" {
  description = "ECR image URI of the `cafe` binary (its entrypoint is `cafe`; the services pass `consume ...` as the command), e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/cafe:1.2.3."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.worker_image))
    error_message = "worker_image must be an ECR image URI with a tag or digest (the tasks pull through the VPC's ECR endpoints; there is no route to other registries)."
  }
}

variable "worker_count" {
  description = "Minimum (and initial) task count of every worker service; see worker_count_by_application for exceptions."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_count >= 1 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number of at least 1."
  }
}

variable "worker_count_by_application" {
  description = "Per-application minimum task counts overriding worker_count, e.g. { orders = 2 }."
  type        = map(number)
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.worker_count_by_application : contains(["orders", "active_orders", "documents", "cache", "inventory", "analytics", "payment-requests"], k) && v >= 1
    ])
    error_message = "worker_count_by_application keys must be worker applications, values at least 1."
  }
}

variable "worker_max_count" {
  description = "Most tasks auto scaling runs per worker service. Capped at kinesis_shards in PROVISIONED mode: a worker without a lease idles."
  type        = number
  default     = 4

  validation {
    condition     = var.worker_max_count >= 1 && floor(var.worker_max_count) == var.worker_max_count
    error_message = "worker_max_count must be a whole number of at least 1."
  }
}

variable "worker_cpu" {
  description = "Fargate CPU units per worker task."
  type        = number
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.worker_cpu)
    error_message = "worker_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "worker_memory" {
  description = "Fargate memory (MiB) per worker task; must be a valid combination with worker_cpu."
  type        = number
  default     = 1024

  validation {
    condition     = var.worker_memory >= 512 && var.worker_memory <= 122880
    error_message = "worker_memory must be between 512 and 122880 MiB."
  }
}

variable "worker_lag_target_seconds" {
  description = "Target projection lag (seconds) of the workers' target-tracking scaling."
  type        = number
  default     = 5

  validation {
    condition     = var.worker_lag_target_seconds > 0
    error_message = "worker_lag_target_seconds must be positive."
  }
}

# ---------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------

variable "aurora_min_acu" {
  description = "Aurora Serverless v2 minimum capacity (ACU)."
  type        = number
  default     = 0.5

  validation {
    condition     = var.aurora_min_acu >= 0 && var.aurora_min_acu <= 256
    error_message = "aurora_min_acu must be between 0 and 256."
  }
}

variable "aurora_max_acu" {
  description = "Aurora Serverless v2 maximum capacity (ACU)."
  type        = number
  default     = 8

  validation {
    condition     = var.aurora_max_acu >= 1 && var.aurora_max_acu <= 256
    error_message = "aurora_max_acu must be between 1 and 256."
  }
}

variable "aurora_reader_count" {
  description = "Aurora readers besides the writer (a reader in another AZ is also the failover target)."
  type        = number
  default     = 1

  validation {
    condition     = var.aurora_reader_count >= 0 && var.aurora_reader_count <= 15
    error_message = "aurora_reader_count must be between 0 and 15."
  }
}

variable "docdb_instance_class" {
  description = "DocumentDB instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "docdb_instance_count" {
  description = "DocumentDB instances (the first is the writer; more give failover targets)."
  type        = number
  default     = 2

  validation {
    condition     = var.docdb_instance_count >= 1 && var.docdb_instance_count <= 16
    error_message = "docdb_instance_count must be between 1 and 16."
  }
}

variable "elasticache_node_type" {
  description = "ElastiCache (Redis) node type of the cache read model."
  type        = string
  default     = "cache.t4g.small"
}

variable "memorydb_node_type" {
  description = "MemoryDB node type of the inventory read model."
  type        = string
  default     = "db.t4g.small"
}

variable "memorydb_shards" {
  description = "MemoryDB shards of the inventory read model (each a primary and one replica). The inventory uses the cluster client, and each store's stock is one key, so stores spread over the shards."
  type        = number
  default     = 1

  validation {
    condition     = var.memorydb_shards >= 1 && var.memorydb_shards <= 500 && floor(var.memorydb_shards) == var.memorydb_shards
    error_message = "memorydb_shards must be a whole number from 1 to 500."
  }
}

variable "redshift_base_rpu" {
  description = "Redshift Serverless base capacity (RPU, 8-512 in steps of 8)."
  type        = number
  default     = 8

  validation {
    condition     = var.redshift_base_rpu >= 8 && var.redshift_base_rpu <= 512 && var.redshift_base_rpu % 8 == 0
    error_message = "redshift_base_rpu must be a multiple of 8 between 8 and 512."
  }
}

# ---------------------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------------------

variable "alarm_email" {
  description = "Email address subscribed to the alarm topic (null: no subscription). The subscription must be confirmed from the mail."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be an email address or null."
  }
}

variable "log_retention_days" {
  description = "Retention of every log group (flow logs, functions, workers, API access logs)."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention of at least a year (365, 400, 545, 731, ...)."
  }
}

variable "worker_architecture" {
  description = "CPU architecture of worker_image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.worker_architecture)
    error_message = "worker_architecture must be X86_64 or ARM64."
  }
}

variable "projector_reserved_concurrency" {
  description = "Reserved concurrency of the projector function. Keep it at least shards x projector_parallelization_factor, or batches queue behind throttles."
  type        = number
  default     = 20

  validation {
    condition     = var.projector_reserved_concurrency >= 1
    error_message = "projector_reserved_concurrency must be at least 1."
  }
}

variable "availability_zones" {
  description = "Zone names the private subnets may use, in order of preference (empty: <region>a to <region>f, the first az_count available ones). Pin them when the region's default picks a zone an instance type is missing from."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Refuse to delete the tables, Aurora and DocumentDB. Set false and apply before `terraform destroy` (teardown)."
  type        = bool
  default     = true
}
