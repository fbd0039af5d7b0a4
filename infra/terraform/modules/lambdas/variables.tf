variable "function_names" {
  description = "Function name by key: api, payment, projector."
  type        = map(string)
}

variable "artifacts_dir" {
  description = "cargo lambda's zip output directory (holding cafe-lambda-<key>/bootstrap.zip)."
  type        = string
}

variable "architecture" {
  description = "arm64 or x86_64."
  type        = string
}

variable "role_arns" {
  description = "Execution role ARN by function key (iam module)."
  type        = map(string)
}

variable "env_kms_key_arn" {
  description = "Customer managed key of the functions' environment variables."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "Customer managed key of the function and access log groups."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the function and access log groups."
  type        = number
}

variable "api_environment" {
  description = "Environment of the API function."
  type        = map(string)
}

variable "payment_environment" {
  description = "Environment of the payment function."
  type        = map(string)
}

variable "projector_environment" {
  description = "Environment of the projector function."
  type        = map(string)
}

variable "api_name" {
  description = "Name of the HTTP API."
  type        = string
}

variable "api_reserved_concurrency" {
  description = "Reserved concurrency of the API function."
  type        = number
}

variable "api_throttle_rate" {
  description = "Stage throttling rate (requests/s)."
  type        = number
}

variable "api_throttle_burst" {
  description = "Stage throttling burst."
  type        = number
}

variable "jwt_issuer" {
  description = "Accepted token issuer."
  type        = string
}

variable "jwt_audience" {
  description = "Accepted token audiences."
  type        = list(string)
}

variable "payment_timeout_seconds" {
  description = "Payment function timeout."
  type        = number
}

variable "payment_batch_size" {
  description = "Messages per payment invocation."
  type        = number
}

variable "payment_batching_window_seconds" {
  description = "Batching window of the payment mapping."
  type        = number
}

variable "payment_max_concurrency" {
  description = "Maximum concurrency of the payment mapping (and the function's reserved concurrency)."
  type        = number
}

variable "payments_queue_arn" {
  description = "Payment requests queue."
  type        = string
}

variable "projector_function" {
  description = "Whether to deploy the projector function."
  type        = bool
}

variable "projector_event_source_arn" {
  description = "Stream ARN, or the fan-out consumer ARN the projector reads through."
  type        = string
}

variable "projector_failures_queue_arn" {
  description = "On-failure destination of the projector mapping (null when no projector)."
  type        = string
  default     = null
}

variable "projector_batch_size" {
  description = "Records per projector invocation."
  type        = number
}

variable "projector_parallelization_factor" {
  description = "Concurrent batches per shard."
  type        = number
}

variable "projector_maximum_retry_attempts" {
  description = "Retries before a batch goes to the failure queue."
  type        = number
}

variable "projector_maximum_record_age_seconds" {
  description = "Oldest record processed."
  type        = number
}

variable "projector_reserved_concurrency" {
  description = "Reserved concurrency of the projector function."
  type        = number
}
