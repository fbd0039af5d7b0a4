variable "name_prefix" {
  description = "Prefix of the role names."
  type        = string
}

variable "table_arns" {
  description = "Table ARN by names.json key."
  type        = map(string)
}

variable "stream_arn" {
  description = "The event stream."
  type        = string
}

variable "stream_consumer_arns" {
  description = "Enhanced fan-out consumer ARN by application."
  type        = map(string)
  default     = {}
}

variable "payments_queue_arn" {
  description = "Payment requests queue."
  type        = string
}

variable "projector_function" {
  description = "Whether the projector function (and so its role) exists."
  type        = bool
}

variable "projector_failures_queue_arn" {
  description = "The projector function's on-failure queue, or null."
  type        = string
  default     = null
}

variable "kms_key_arns" {
  description = "Key ARN by data class (kms module)."
  type        = map(string)
}

variable "redshift_workgroup_arn" {
  description = "Redshift Serverless workgroup the Data API statements run on."
  type        = string
}

variable "redshift_admin_secret_arn" {
  description = "The Redshift-managed admin secret the Data API callers authenticate with."
  type        = string
}

variable "worker_secret_arns" {
  description = "Secrets the ECS execution role injects into worker containers."
  type        = list(string)
}

variable "worker_image" {
  description = "ECR image URI of the workers (its repository is what the execution role may pull)."
  type        = string
}

variable "worker_applications" {
  description = "Worker applications to create task roles for."
  type        = list(string)
}

variable "worker_log_group_name" {
  description = "Log group of the worker containers."
  type        = string
}

variable "function_names" {
  description = "Function name by key (api, payment, projector): their log groups are /aws/lambda/<name>."
  type        = map(string)
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the workers may publish to (names.json `metrics_namespace`)."
  type        = string
}
